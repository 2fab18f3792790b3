/*
 * Which of the container's GPUs the application uses, and in which order it numbers them
 * (DESIGN §6, step 1). The same rule as gpunuma.topology.visible; tests/launcher holds the two to
 * the same answers.
 *
 * NVIDIA_VISIBLE_DEVICES is the container runtime's: it picks a set, which CUDA still numbers in
 * bus order, and usually the runtime has applied it already (its host indices then match nothing
 * here), so an entry that resolves to nothing means "no narrowing".
 *
 * CUDA_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES and ROCR_VISIBLE_DEVICES follow CUDA's rule: entries
 * are indices into the visible GPUs or (prefixes of) UUIDs, the application numbers its devices in
 * the variable's order, an invalid entry ends the list ("7,1,-1" is 7,1; "-1" is no GPU) and an
 * empty value means no GPU. A MIG UUID is valid to CUDA but names a slice numa-exec cannot map to
 * its GPU here: the variable then narrows nothing, and the rank is not applied either, because the
 * k-th GPU of the container is not the application's device k (SGLang #24766 in another form).
 */
#include <string.h>

#include "numa_exec.h"

#define ENTRY_SIZE 256

/* The next comma-separated entry of *cursor, trimmed, copied into entry (cut to fit). */
static int next_entry(const char **cursor, char entry[ENTRY_SIZE])
{
	const char *start = *cursor, *end;
	if (!start)
		return 0;
	end = strchr(start, ',');
	*cursor = end ? end + 1 : NULL;
	if (!end)
		end = start + strlen(start);
	while (start < end && ne_is_blank(*start))
		start++;
	while (end > start && ne_is_blank(end[-1]))
		end--;
	size_t len = (size_t)(end - start);
	if (len >= ENTRY_SIZE)
		len = ENTRY_SIZE - 1;
	memcpy(entry, start, len);
	entry[len] = '\0';
	return 1;
}

static int all_digits(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static int starts_with_nocase(const char *text, const char *prefix)
{
	for (; *prefix; prefix++, text++)
		if (ne_lower(*text) != ne_lower(*prefix))
			return 0;
	return 1;
}

static int same_nocase(const char *a, const char *b)
{
	return strlen(a) == strlen(b) && starts_with_nocase(a, b);
}

/* The GPU of list an entry names, -1 for none, -2 for several (an ambiguous UUID prefix). */
static int resolve_uuid(const ne_gpu *gpus, const ne_selection *list, const char *entry)
{
	int found = -1;
	if (!*entry)
		return -1;
	for (int i = 0; i < list->count; i++) {
		const ne_gpu *gpu = &gpus[list->index[i]];
		if (!gpu->uuid[0] || !starts_with_nocase(gpu->uuid, entry))
			continue;
		/* Partitions of one AMD GPU share its UUID: the first of them stands for it. */
		if (found >= 0 && !same_nocase(gpus[found].uuid, gpu->uuid))
			return -2;
		if (found < 0)
			found = list->index[i];
	}
	return found;
}

static int contains(const ne_selection *list, int index)
{
	for (int i = 0; i < list->count; i++)
		if (list->index[i] == index)
			return 1;
	return 0;
}

static void narrow_runtime(const ne_gpu *gpus, ne_selection *list, const char *value,
			   ne_text *notes)
{
	const char *name = "NVIDIA_VISIBLE_DEVICES";
	char entry[ENTRY_SIZE], quoted[96];
	ne_selection picked = {.count = 0};
	const char *cursor = value;
	if (!value || list->count == 0)
		return;
	/* The whole value, trimmed: "all", "void", "none" and a device path narrow nothing. */
	const char *start = value;
	while (ne_is_blank(*start))
		start++;
	size_t len = strlen(start);
	while (len && ne_is_blank(start[len - 1]))
		len--;
	if (len == 0 || *start == '/' || (len == 3 && starts_with_nocase(start, "all")) ||
	    (len == 4 && (starts_with_nocase(start, "void") || starts_with_nocase(start, "none"))))
		return;
	while (next_entry(&cursor, entry)) {
		int hit;
		if (all_digits(entry)) {
			unsigned long index;
			hit = ne_parse_uint(entry, strlen(entry), (unsigned long)list->count - 1,
					    &index) == 0 ? list->index[index] : -1;
		} else {
			hit = resolve_uuid(gpus, list, entry);
		}
		if (hit < 0) {
			ne_text_quote(quoted, sizeof(quoted), entry);
			ne_text_add(notes, "%s entry %s matches %s of the visible GPUs: not narrowing by it",
				    name, quoted, hit == -2 ? "several" : "none");
			return;
		}
		if (!contains(&picked, hit) && picked.count < NE_MAX_GPUS)
			picked.index[picked.count++] = hit;
	}
	/* A set, numbered in bus order. */
	int kept = 0;
	for (int i = 0; i < list->count; i++)
		if (contains(&picked, list->index[i]))
			list->index[kept++] = list->index[i];
	list->count = kept;
}

/* CUDA's rule; returns 1 when the variable was given up on (the device order is then unknown). */
static int narrow_cuda(const char *name, const ne_gpu *gpus, ne_selection *list, const char *value,
		       int indices_ok, ne_text *notes, ne_text *hidden)
{
	char entry[ENTRY_SIZE], quoted[96];
	ne_selection picked = {.count = 0};
	const char *cursor = value;
	int visible = list->count, position = 0;
	if (!value || visible == 0)
		return 0;
	{
		const char *start = value;
		while (ne_is_blank(*start))
			start++;
		if (!*start) {
			ne_text_add(hidden, "%s is empty, which hides every GPU from the application", name);
			list->count = 0;
			return 0;
		}
	}
	while (next_entry(&cursor, entry)) {
		int hit;
		const char *why;
		position++;
		if (starts_with_nocase(entry, "MIG-")) {
			ne_text_quote(quoted, sizeof(quoted), entry);
			ne_text_add(notes, "%s entry %s is a MIG device, which numa-exec cannot map to its GPU: "
				    "not narrowing by %s", name, quoted, name);
			return 1;
		}
		if (all_digits(entry)) {
			if (!indices_ok) {
				ne_text_add(notes, "%s lists indices, but the visible NVIDIA GPUs are of different "
					    "models and CUDA_DEVICE_ORDER is not PCI_BUS_ID, so their order is "
					    "unknown: not narrowing by it", name);
				return 1;
			}
			unsigned long index;
			hit = ne_parse_uint(entry, strlen(entry), (unsigned long)visible - 1, &index) == 0
				? list->index[index] : -1;
			why = "is not one of the";
		} else {
			hit = resolve_uuid(gpus, list, entry);
			why = !*entry ? "is empty, not one of the"
				: hit == -2 ? "matches several of the" : "matches none of the";
		}
		if (hit >= 0 && contains(&picked, hit)) {
			hit = -1;
			why = "repeats one of the";
		}
		if (hit < 0) {
			ne_text_quote(quoted, sizeof(quoted), entry);
			if (picked.count == 0) {
				ne_text_add(hidden, "%s entry %s %s %d visible GPUs, and CUDA stops at the first "
					    "invalid entry: the application sees no GPU", name, quoted, why,
					    visible);
			} else {
				ne_text_add(notes, "%s entry %d (%s) %s %d visible GPUs: CUDA stops there, so "
					    "the application sees the %d before it", name, position, quoted, why,
					    visible, picked.count);
			}
			break;
		}
		picked.index[picked.count++] = hit;
	}
	*list = picked;
	return 0;
}

static int homogeneous(const ne_gpu *gpus, const ne_selection *list)
{
	for (int i = 1; i < list->count; i++)
		if (strcmp(gpus[list->index[i]].model, gpus[list->index[0]].model) != 0)
			return 0;
	return 1;
}

void ne_select(const ne_gpu *gpus, int count, ne_getenv_fn lookup, void *context,
	       ne_selection *out, ne_text *notes, ne_text *hidden)
{
	ne_selection nvidia = {.count = 0}, amd = {.count = 0};
	int unknown_order = 0;
	for (int i = 0; i < count && i < NE_MAX_GPUS; i++) {
		ne_selection *list = gpus[i].vendor == NE_NVIDIA ? &nvidia : &amd;
		list->index[list->count++] = i;
	}

	narrow_runtime(gpus, &nvidia, lookup("NVIDIA_VISIBLE_DEVICES", context), notes);
	const char *order = lookup("CUDA_DEVICE_ORDER", context);
	int indices_ok = (order && strcmp(order, "PCI_BUS_ID") == 0) || homogeneous(gpus, &nvidia);
	unknown_order |= narrow_cuda("CUDA_VISIBLE_DEVICES", gpus, &nvidia,
				     lookup("CUDA_VISIBLE_DEVICES", context), indices_ok, notes,
				     hidden);
	unknown_order |= narrow_cuda("ROCR_VISIBLE_DEVICES", gpus, &amd,
				     lookup("ROCR_VISIBLE_DEVICES", context), 1, notes, hidden);
	/* HIP honours CUDA_VISIBLE_DEVICES as another name for HIP_VISIBLE_DEVICES. */
	const char *hip = lookup("HIP_VISIBLE_DEVICES", context) ? "HIP_VISIBLE_DEVICES"
								 : "CUDA_VISIBLE_DEVICES";
	unknown_order |= narrow_cuda(hip, gpus, &amd, lookup(hip, context), 1, notes, hidden);

	out->count = 0;
	for (int i = 0; i < nvidia.count; i++)
		out->index[out->count++] = nvidia.index[i];
	for (int i = 0; i < amd.count && out->count < NE_MAX_GPUS; i++)
		out->index[out->count++] = amd.index[i];

	const char *rank_name = lookup("GPUNUMA_RANK_ENV", context);
	if (!rank_name || !*rank_name || out->count == 0)
		return;
	const char *rank = lookup(rank_name, context);
	if (!rank) {
		ne_text_add(notes, "GPUNUMA_RANK_ENV names %.64s, which is not set: using all %d GPUs",
			    rank_name, out->count);
		return;
	}
	char value[ENTRY_SIZE];
	const char *cursor = rank;
	next_entry(&cursor, value);
	unsigned long k;
	if (cursor || !all_digits(value) || ne_parse_uint(value, strlen(value), 1UL << 30, &k) != 0) {
		ne_text_add(notes, "%.64s=%.64s is not a rank: using all %d GPUs", rank_name, rank,
			    out->count);
	} else if (unknown_order) {
		ne_text_add(notes, "%.64s=%lu not applied: the application's device order is unknown "
			    "(see above): using all %d GPUs", rank_name, k, out->count);
	} else if (k >= (unsigned long)out->count) {
		ne_text_add(notes, "%.64s=%lu but the container has %d GPUs: using all of them",
			    rank_name, k, out->count);
	} else {
		out->index[0] = out->index[k];
		out->count = 1;
	}
}
