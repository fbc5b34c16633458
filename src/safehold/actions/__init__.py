"""One module per verb. Actions take typed config and a Reporter and return plain result dicts."""
