"""Multi-device training through Lightning's DDP (two CPU processes stand in for two GPUs)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np, torch
    torch.set_num_threads(1)
    import sslspatial as ss

    if __name__ == "__main__":
        sdata = ss.datasets.synthetic_tissue(n_cells=600, n_genes=20, image=False, spot_layouts=(), seed=0)
        adata = sdata.tables["table"]
        ss.pp.build_graph(adata, method="knn", n_neighs=6)
        ss.model.SpatialPretrainModel.setup_anndata(adata)
        model = ss.model.SpatialPretrainModel(adata, n_hidden=16, n_latent=8)
        before = {k: v.clone() for k, v in model.module.state_dict().items()}
        model.train(max_epochs=2, batch_size=100, accelerator="cpu", devices=2, strategy="ddp_spawn")
        after = model.module.state_dict()
        n_changed = sum(not torch.equal(before[k], after[k]) for k in before)
        z = model.get_latent_representation()
        print("RESULT", n_changed, len(before), z.shape[0], bool(np.isfinite(z).all()))
    """
)


def test_ddp_spawn_on_two_cpu_processes(tmp_path):
    """Masked pretraining (whose loss logs extra metrics) trains under DDP and the parent gets the trained weights.

    scvi-tools 1.4 logs extra metrics as inference tensors, which the DDP all-reduce cannot update in place; the
    package's training plan (``sslspatial.model._plan``) logs them as ordinary tensors. Without that fix this fails.
    """
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    _, n_changed, n_params, n_cells, finite = line[0].split()
    assert int(n_changed) == int(n_params)  # every parameter tensor was trained, and came back to this process
    assert int(n_cells) == 600 and finite == "True"
