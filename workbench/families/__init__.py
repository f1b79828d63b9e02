"""Every causal-LM family of the installed transformers: tiny random-init configs of each family's own
config class, the exactness checks a family passes, and the coverage table (``workbench families``)."""
