"""Turns inputs (our wire recordings, BCC offwaketime text and folded output) into a Recording."""
