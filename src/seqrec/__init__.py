"""seqrec: sequential recommendation in PyTorch."""
__version__ = "0.1.0"

from seqrec import config as _config


def _load_models() -> None:
    """Import every model, which registers its config dataclass in seqrec.config.MODEL_CONFIGS.

    Installed as seqrec.config's model loader, so that `load_config` / `config_from_dict` find the models when only
    seqrec.config was imported, while seqrec.config itself never imports seqrec.models (the models import it), and
    `import seqrec` stays light: torch and the models are imported on the first model lookup."""
    from seqrec.models import load_all
    load_all()


_config.set_model_loader(_load_models)

from seqrec.api import SeqRec  # noqa: E402  (the Python API; light: torch is imported on first use)

__all__ = ["SeqRec", "__version__"]
