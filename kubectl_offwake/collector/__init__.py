"""Collector: node side, standard library and BCC only."""
