"""ttc.routers."""
