"""Forward-pass backends other than PyTorch (opt-in); tokenisation, batching and pooling stay flagstack's."""
