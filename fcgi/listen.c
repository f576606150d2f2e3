/*
 * listen.c - the listening socket: binds --listen ADDR, finds the socket
 * systemd socket activation passed (from LISTEN_PID/LISTEN_FDS, which the
 * config module read), and recognises the socket mod_fcgid passes on fd 0.
 */
#include "listen.h"

#include "log.h"

#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int
open_unix(const char *path)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path) || path[0] != '/') {
		log_warnx("--listen: unix socket path must be absolute "
			  "and shorter than %zu bytes",
			  sizeof(sun.sun_path));
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	/* A stale socket from an earlier run; never a regular file. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    unlink(path) != 0) {
		log_warn("--listen: cannot remove stale %s", path);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_warn("socket");
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		log_warn("--listen: bind %s", path);
		close(fd);
		return -1;
	}
	return fd;
}

static int
open_inet(const char *addr)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	char host[256];
	const char *colon = strrchr(addr, ':');
	size_t hlen;
	int one = 1;
	int fd;
	int rc;

	if (colon == NULL || colon == addr || colon[1] == '\0') {
		log_warnx("--listen: expected unix:/path or host:port, "
			  "got \"%s\"",
			  addr);
		return -1;
	}
	hlen = (size_t)(colon - addr);
	if (addr[0] == '[' && colon[-1] == ']') {
		addr++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host)) {
		log_warnx("--listen: host name too long");
		return -1;
	}
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0) {
		log_warnx("--listen: %s: %s", addr, gai_strerror(rc));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_warn("socket");
		freeaddrinfo(res);
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
		log_warn("setsockopt SO_REUSEADDR");
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
		log_warn("--listen: bind %s", addr);
		freeaddrinfo(res);
		close(fd);
		return -1;
	}
	freeaddrinfo(res);
	return fd;
}

int
open_listener(const char *addr)
{
	int fd;

	if (strncmp(addr, "unix:", 5) == 0)
		fd = open_unix(addr + 5);
	else
		fd = open_inet(addr);
	if (fd < 0)
		return -1;
	if (listen(fd, LISTEN_BACKLOG) != 0) {
		log_warn("listen");
		close(fd);
		return -1;
	}
	return fd;
}

int
systemd_fd(const struct config *cfg)
{
	if (cfg->listen_fds < 1 || cfg->listen_pid != (long)getpid())
		return -1;
	return 3; /* SD_LISTEN_FDS_START; we use the first socket only */
}

/*
 * mod_fcgid (2.3.9, fcgid_proc_unix.c proc_spawn_process) binds a new unix
 * socket for each process it spawns, named "<FcgidIPCDir>/<pid>.<n>" with
 * the pid of its process manager, which then forks and execs the program
 * with that socket on fd 0 (suexec, when used, execs in place): so the
 * pid in the name is our parent's. Debian's mod_fcgid.so has that
 * "%s/%d.%d" format. spawn-fcgi and systemd name the socket as they are
 * told; nobody names one after the PID of the process that will start the
 * server. The environment cannot tell: mod_fcgid passes only PATH and the
 * FcgidInitialEnv variables.
 */
int
listen_from_mod_fcgid(int fd)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	const char *name;
	const char *p;
	char *end;
	long pid;

	memset(&sun, 0, sizeof(sun));
	if (getsockname(fd, (struct sockaddr *)&sun, &len) != 0 ||
	    sun.sun_family != AF_UNIX ||
	    len <= (socklen_t)offsetof(struct sockaddr_un, sun_path) ||
	    sun.sun_path[0] != '/')
		return 0;
	sun.sun_path[sizeof(sun.sun_path) - 1] = '\0';
	name = strrchr(sun.sun_path, '/') + 1;
	if (*name < '0' || *name > '9')
		return 0;
	pid = strtol(name, &end, 10);
	if (*end != '.' || end[1] == '\0')
		return 0;
	for (p = end + 1; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return pid > 1 && pid == (long)getppid();
}
