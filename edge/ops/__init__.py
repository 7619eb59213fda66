"""Operations: the daemon and its command line, the admin socket, `edgectl`,
sd_notify.
"""
