/*
 * unit.h - helpers shared by the table-driven unit tests.
 */
#ifndef CP_UNIT_H
#define CP_UNIT_H

#include "util.h" /* NELEM */

/* A printable stand-in for a NULL string in failure messages. */
static inline const char *
nz(const char *s)
{
	return s ? s : "(null)";
}

#endif
