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

from .._warnings import quiet

__all__ = ["ConsoleMixin"]


class ConsoleMixin:
    """Progress bar on by default and quiet dependencies in ``train`` and ``load`` (see the module docstring)."""

    def train(self, *args, **kwargs):
        """Train with a progress bar unless ``enable_progress_bar=False``, dependencies' chatter hidden."""
        kwargs.setdefault("enable_progress_bar", True)
        with quiet():
            return super().train(*args, **kwargs)

    def save(self, dir_path, *args, **kwargs):
        """Save as :meth:`scvi.model.base.BaseModelClass.save`; with ``save_anndata=True`` the table is checked first.

        A name with ``"/"`` in the table (a column or ``uns`` key) would be split by h5ad into nested groups, so it is
        refused, with the names listed, before anything is written.
        """
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
