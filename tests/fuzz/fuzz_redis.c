/*
 * fuzz_redis.c - the decoder of reserve.lua's reply
 * (shared/sched_redis.c: sched_redis_decode).
 *
 * Input: byte 0 gives the number of keys (0 to 15); the rest is fed to
 * hiredis' own reply reader as RESP ("*8\r\n:0\r\n..."), and every reply
 * it builds is decoded, as sched_redis_reserve does with a reply from
 * Redis. A decoded slot must name a key in range or one of the SLOT_*
 * codes, with a why in range.
 */
#include "fuzz.h"

#include "sched_redis.h"

/*
 * The lowest key code and the largest why reserve.lua may give (the
 * client limits are newer: SLOT_CLIENT, SLOT_WHY_CLIENT_*).
 */
#ifdef SLOT_CLIENT
#define KEY_MIN SLOT_CLIENT
#define WHY_MAX SLOT_WHY_CLIENT_CONC
#else
#define KEY_MIN SLOT_POLL
#define WHY_MAX SLOT_WHY_PROBE
#endif

/*
 * hiredis 0.14 (Debian 12) allocates a multi-bulk's element array as soon
 * as it reads its count, with no cap (1.x has maxelements): "*888888884"
 * is a 7 GB calloc, libFuzzer's out-of-memory, and not a bug of ours
 * (Redis is trusted to send what the script returned). Inputs with a
 * count above 64 anywhere are skipped.
 */
static int
huge_count(const uint8_t *p, size_t n)
{
	size_t i;
	size_t j;
	long v;

	for (i = 0; i < n; i++) {
		if (p[i] != '*')
			continue;
		v = 0;
		for (j = i + 1; j < n && p[j] >= '0' && p[j] <= '9'; j++) {
			v = v * 10 + (p[j] - '0');
			if (v > 64)
				return 1;
		}
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReader *rd;
	void *reply;
	struct slot sl;
	char errbuf[256];
	int nkeys;
	int replies = 0;

	if (size < 1 || huge_count(data, size))
		return 0;
	nkeys = data[0] % 16;
	rd = redisReaderCreate();
	if (rd == NULL)
		abort();
	if (redisReaderFeed(rd, (const char *)data + 1, size - 1) != REDIS_OK)
		goto out;
	while (replies++ < 64) {
		reply = NULL;
		if (redisReaderGetReply(rd, &reply) != REDIS_OK ||
		    reply == NULL)
			break;
		memset(&sl, 0, sizeof(sl));
		errbuf[0] = '\0';
		if (sched_redis_decode(reply, nkeys, &sl, errbuf,
				       sizeof(errbuf)) == CP_OK) {
			if (sl.s_key < KEY_MIN || sl.s_key >= nkeys ||
			    sl.s_why < SLOT_WHY_NONE || sl.s_why > WHY_MAX ||
			    sl.s_wait_us < 0)
				fuzz_fail("decoded slot out of range");
		} else if (strlen(errbuf) == 0) {
			fuzz_fail("an error without a reason");
		}
		freeReplyObject(reply);
	}
out:
	redisReaderFree(rd);
	return 0;
}
