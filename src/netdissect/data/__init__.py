"""Datasets for netdissect: the Broden reader, the toy world generator and downloads."""
