"""What training and loading print: scvi-tools' progress bar by default, and none of the dependencies' chatter.

Every sslspatial model puts :class:`ConsoleMixin` first among its bases, so its ``train`` and ``load`` behave the
same way:

- a progress bar over the epochs by default, as in scvi-tools (``enable_progress_bar=True``); pass
  ``enable_progress_bar=False`` to ``train`` (or ``train_kwargs={"enable_progress_bar": False}`` to an
  ``ss.tl`` function) to turn it off.
- training and loading run inside :func:`sslspatial._warnings.quiet`, which hides Lightning's device banner, the
  litlogger tip, deprecation noise and scvi's "File ... already downloaded", and afterwards restores the warning
  filters and the level of every logger it touched (nothing stays silenced for the rest of the session).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .._warnings import quiet

__all__ = ["ConsoleMixin"]


class ConsoleMixin:
    """Progress bar on by default and quiet dependencies in ``train`` and ``load`` (see the module docstring)."""

    def __init_subclass__(cls, **kwargs):
        """Run the subclass's own ``setup_anndata`` quietly too (scvi's "Generating sequential column names")."""
        super().__init_subclass__(**kwargs)
        setup = cls.__dict__.get("setup_anndata")
        if isinstance(setup, classmethod):
            cls.setup_anndata = classmethod(_quietly(setup.__func__))

    def train(self, *args, **kwargs):
        """Train with a progress bar unless ``enable_progress_bar=False``, dependencies' chatter hidden."""
        from .._devices import check_devices

        kwargs.setdefault("enable_progress_bar", True)
        check_devices(kwargs.get("accelerator", "auto"), kwargs.get("devices", "auto"), kwargs.get("strategy"))
        with quiet(), _without_version_number():
            return super().train(*args, **kwargs)

    def save(self, dir_path, *args, **kwargs):
        """Save as :meth:`scvi.model.base.BaseModelClass.save`; with ``save_anndata=True`` the table is checked first.

        A name with ``"/"`` in the table (a column or ``uns`` key) would be split by h5ad into nested groups, so it is
        refused, with the names listed, before anything is written. Under distributed training only the main process
        writes.
        """
        from .._devices import is_main_process

        if not is_main_process():  # the extra processes of distributed training write nothing
            return None
        save_anndata = kwargs.get("save_anndata", args[2] if len(args) > 2 else False)
        if save_anndata:
            from .._validate import check_storable

            check_storable(self.adata, "model.adata (save_anndata=True)")
        with quiet():
            return super().save(dir_path, *args, **kwargs)

    @classmethod
    def load(cls, *args, **kwargs):
        """Load as :meth:`scvi.model.base.BaseModelClass.load`, without scvi's "File ... already downloaded"."""
        with quiet():
            return super().load(*args, **kwargs)


@contextlib.contextmanager
def _without_version_number() -> Iterator[None]:
    """Drop ``v_num`` (the logger's run number, meaningless to a user) from scvi's progress bar during one training."""
    from scvi.train._progress import ProgressBar

    original = ProgressBar.get_metrics

    def get_metrics(self, trainer, pl_module):
        metrics = dict(original(self, trainer, pl_module))
        metrics.pop("v_num", None)
        return metrics

    ProgressBar.get_metrics = get_metrics
    try:
        yield
    finally:
        ProgressBar.get_metrics = original


def _quietly(func):
    """``func`` run inside :func:`~sslspatial._warnings.quiet`, with its name and docstring."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with quiet():
            return func(*args, **kwargs)

    return wrapper
