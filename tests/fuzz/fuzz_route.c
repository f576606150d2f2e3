/*
 * fuzz_route.c - routing (shared/route.c): route_path() from the CGI
 * variables a web server sets, then route_decide().
 *
 * Input: up to five '\n'-separated fields, REQUEST_METHOD, SCRIPT_NAME,
 * PATH_INFO, DOCUMENT_URI, REQUEST_URI; a field that is the single byte
 * 0x01 (or a missing one) is an unset variable. route_path() runs into
 * output buffers of several sizes, down to 1 byte.
 */
#include "fuzz.h"

#include "route.h"

static const char *
var(char *f)
{
	if (f == NULL || (f[0] == '\x01' && f[1] == '\0'))
		return NULL;
	return f;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t sizes[] = {1, 2, 3, 16, 4096};
	struct route_vars v;
	const char *allow;
	enum route r;
	enum cp_err err;
	char *f[5];
	char *out;
	size_t n;
	size_t i;

	n = fuzz_fields(data, size, f, 5);
	v.rv_script_name = var(f[1]);
	v.rv_path_info = var(f[2]);
	v.rv_document_uri = var(f[3]);
	v.rv_request_uri = var(f[4]);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		out = malloc(sizes[i]);
		if (out == NULL)
			abort();
		err = route_path(&v, out, sizes[i]);
		if (err != CP_OK && err != CP_ERR_TOOBIG)
			fuzz_fail("route_path returned %d", (int)err);
		if (err == CP_OK) {
			if (out[0] != '/' || strlen(out) >= sizes[i])
				fuzz_fail("route_path: bad path");
			r = route_decide(var(f[0]), out, &allow);
			if ((r == ROUTE_NOT_ALLOWED) != (allow != NULL))
				fuzz_fail("route_decide: Allow mismatch");
		}
		free(out);
	}
	fuzz_free_fields(f, n);
	return 0;
}
