"""One router per concern; each declares its prefix and tags once."""
