"""seqkit: RNN, GRU and LSTM sequence models for text, on PyTorch.

Train from a recipe (``seqkit train recipes/lm.yaml``), then load the checkpoint::

    import seqkit
    lm = seqkit.LanguageModel.from_pretrained("runs/lm/best")
    print(lm.generate("the whale", max_tokens=30, seed=1))
"""

__version__ = "0.1.0"

from .api import LanguageModel, load  # noqa: E402

__all__ = ["LanguageModel", "load", "__version__"]
