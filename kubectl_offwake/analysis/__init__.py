"""Pure analysis: classify every wakeup, aggregate, and draw findings from a Recording."""
