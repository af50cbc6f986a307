"""The Flink runner: the pipeline as a PyFlink job (see :mod:`liveprofile.flink.job`)."""
