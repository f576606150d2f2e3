/*
 * status.h - `cerebras-proxy status [--json]`: what the scheduler's
 * shared state says, for an operator on any host.
 *
 * Reads the configuration from the environment as the workers do, then
 * the state through sched_inspect (Redis, or this host's shared memory
 * without it), and prints per key its index, fingerprint, organisation,
 * state, rest end, last upstream status and requests and tokens today;
 * the learned budgets per organisation and model; the timeline's depth,
 * the fallback state and the Redis address, its password masked. Never a
 * key or a client token.
 */
#ifndef CP_STATUS_H
#define CP_STATUS_H

#include "config.h"
#include "sched_view.h"

#include <stdio.h>

/*
 * The subcommand: argv[0] is "status", then its options (--json,
 * --help). Returns the exit status: 0 printed, 1 the state could not be
 * read (one line on stderr says why), 2 a bad option.
 */
int status_main(int argc, char **argv);

/*
 * Prints v (inspected at wall-clock time now_ms, ms since 1970) for cfg
 * to fp: text, or one JSON object with json. Returns 0, or -1 if the
 * JSON could not be built or written. Pure but for the writes to fp.
 */
int status_print(const struct config *cfg, const struct sched_view *v,
		 int64_t now_ms, int json, FILE *fp);

#endif
