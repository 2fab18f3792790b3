/*
 * libFuzzer harness: the cpulist, node, distance and bus id parsers (launcher/src/parse.c).
 * Besides "no crash, no sanitizer report", it checks what the launcher relies on: a parsed cpulist
 * formats to text that parses back to the same set, and a normalized bus id normalizes to itself.
 */
#include <stdlib.h>
#include <string.h>

#include "../src/numa_exec.h"

static ne_cpuset first, second;
static char text[NE_CPULIST_CAP];

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	const char *input = (const char *)data;
	ne_cpuset_clear(&first);
	ne_cpulist_parse(&first, input, size);
	int len = ne_cpulist_format(&first, text, sizeof(text));
	if (len < 0)
		abort();
	ne_cpuset_clear(&second);
	ne_cpulist_parse(&second, text, (size_t)len);
	if (memcmp(&first, &second, sizeof(first)) != 0)
		abort();

	long node = ne_parse_node(input, size);
	if (node < -(long)NE_MAX_NODES || node >= NE_MAX_NODES)
		abort();

	unsigned long row[NE_MAX_NODES];
	if (ne_parse_distances(input, size, row, NE_MAX_NODES) > NE_MAX_NODES)
		abort();

	char bdf[NE_BDF_SIZE], again[NE_BDF_SIZE];
	if (ne_normalize_bdf(input, size, bdf) == 0) {
		if (ne_normalize_bdf(bdf, strlen(bdf), again) != 0 || strcmp(bdf, again) != 0)
			abort();
	}
	return 0;
}
