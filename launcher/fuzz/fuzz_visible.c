/*
 * libFuzzer harness: the *_VISIBLE_DEVICES and rank rule (launcher/src/select.c) over hostile
 * environments. The input is split at NUL bytes into the values of NVIDIA_VISIBLE_DEVICES,
 * CUDA_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES and LOCAL_RANK (a missing part
 * leaves the variable unset). The selection must name each device at most once, only devices that
 * exist, and the notes must stay one line.
 */
#include <stdlib.h>
#include <string.h>

#include "../src/numa_exec.h"

static const char *names[] = {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES",
			      "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "LOCAL_RANK"};
#define NAMES (sizeof(names) / sizeof(names[0]))

typedef struct {
	const char *values[NAMES];
} environment;

static const char *lookup(const char *name, void *context)
{
	const environment *env = context;
	if (strcmp(name, "GPUNUMA_RANK_ENV") == 0)
		return env->values[NAMES - 1] ? "LOCAL_RANK" : NULL;
	for (size_t i = 0; i < NAMES; i++)
		if (strcmp(name, names[i]) == 0)
			return env->values[i];
	return NULL;
}

static const ne_gpu gpus[] = {
	{NE_NVIDIA, "0000:1b:00.0", "GPU-0a000000-1111", "NVIDIA H100", 0},
	{NE_NVIDIA, "0000:43:00.0", "GPU-0a000001-1111", "NVIDIA H100", 0},
	{NE_NVIDIA, "0000:9d:00.0", "GPU-0b000002-1111", "NVIDIA L40S", 0},
	{NE_NVIDIA, "0000:c3:00.0", "", "NVIDIA L40S", 0},
	{NE_AMD, "0000:e1:00.0", "GPU-5c2b", "AMD Instinct MI300X", 128},
	{NE_AMD, "0000:e1:00.0", "GPU-5c2b", "AMD Instinct MI300X", 129},
};
#define GPUS ((int)(sizeof(gpus) / sizeof(gpus[0])))

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	char *copy = malloc(size + 1);
	environment env = {{NULL}};
	ne_selection out;
	static ne_text notes, hidden;
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	char *part = copy;
	for (size_t i = 0; i < NAMES && part <= copy + size; i++) {
		env.values[i] = part;
		part += strlen(part) + 1;
	}
	ne_text_clear(&notes);
	ne_text_clear(&hidden);
	ne_select(gpus, GPUS, lookup, &env, &out, &notes, &hidden);
	if (out.count < 0 || out.count > GPUS)
		abort();
	for (int i = 0; i < out.count; i++) {
		if (out.index[i] < 0 || out.index[i] >= GPUS)
			abort();
		for (int j = 0; j < i; j++)
			if (out.index[i] == out.index[j])
				abort();
	}
	for (const char *c = notes.text; *c; c++)
		if (*c == '\n' || *c == '\r')
			abort();
	if (notes.len >= sizeof(notes.text) || hidden.len >= sizeof(hidden.text))
		abort();
	free(copy);
	return 0;
}
