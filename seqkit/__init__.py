"""seqkit: RNN, GRU and LSTM sequence models for text, on PyTorch.

Train from a recipe (``seqkit train recipes/lm.yaml``), then load the checkpoint::

    import seqkit
    lm = seqkit.LanguageModel.from_pretrained("runs/lm/best")
    print(lm.generate("the whale", max_tokens=30, seed=1))
    tagger = seqkit.Tagger.from_pretrained("runs/ner/best")
    print(tagger.tag("Pretty bad storm here last evening at the Empire State Building").spans)
"""

__version__ = "0.1.0"

__all__ = ["LanguageModel", "Tagger", "Classifier", "Regressor", "Generator", "Seq2Seq", "load", "__version__"]


def __getattr__(name: str):
    # Public names load on first use, so `seqkit --help` and `import seqkit` stay fast
    # (PyTorch alone takes over a second to import).
    if name in ("LanguageModel", "Tagger", "Classifier", "Regressor", "Prediction", "Generator", "Seq2Seq", "load"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'seqkit' has no attribute {name!r}")
