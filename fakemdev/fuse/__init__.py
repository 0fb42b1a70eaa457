"""The FUSE backend: mfusepy operations over the sysfs projection, and the daemon."""
