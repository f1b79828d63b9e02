"""The model zoo: the corpus, tokenizers and small models the workbench ships, and how each was made."""
