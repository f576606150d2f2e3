/*
 * listen.h - the listening socket: one we bind (--listen), the one systemd
 * socket activation passed, and what an inherited one tells of who
 * spawned us.
 */
#ifndef CP_FCGI_LISTEN_H
#define CP_FCGI_LISTEN_H

#include "config.h"

#define LISTEN_BACKLOG 1024

/*
 * Binds and listens on addr ("unix:/abs/path" or "host:port", "[v6]:port").
 * Returns the listening fd, or -1 after logging one line.
 */
int open_listener(const char *addr);

/*
 * The listening socket systemd passed (sd_listen_fds(3): the first one,
 * fd 3), or -1 when there is none for this process.
 */
int systemd_fd(const struct config *cfg);

/*
 * 1 if fd is the socket Apache's mod_fcgid made for this process, else 0
 * (also when it cannot tell).
 */
int listen_from_mod_fcgid(int fd);

#endif
