/*
 * libFuzzer harness: procfs and sysfs files numa-exec reads (launcher/src/parse.c): the NVIDIA
 * information file, KFD node properties, a /proc status field, first lines. Checks that every string it produces is
 * terminated within its buffer and that a bus id from KFD properties is one the launcher accepts.
 */
#include <stdlib.h>
#include <string.h>

#include "../src/numa_exec.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	const char *input = (const char *)data;
	ne_nvidia_info info;
	ne_parse_nvidia_info(input, size, &info);
	if (strnlen(info.uuid, sizeof(info.uuid)) == sizeof(info.uuid) ||
	    strnlen(info.model, sizeof(info.model)) == sizeof(info.model))
		abort();

	unsigned long render;
	char bdf[NE_BDF_SIZE], again[NE_BDF_SIZE];
	if (ne_parse_kfd_properties(input, size, &render, bdf) == 0) {
		if (render == 0 || ne_normalize_bdf(bdf, strlen(bdf), again) != 0)
			abort();
	}

	const char *value;
	size_t value_len;
	if (ne_status_field(input, size, "Cpus_allowed_list", &value, &value_len) &&
	    (value < input || value + value_len > input + size || memchr(value, '\n', value_len)))
		abort();

	char line[64];
	ne_first_line(input, size, line, sizeof(line));
	if (strchr(line, '\n'))
		abort();
	return 0;
}
