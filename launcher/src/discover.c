/*
 * Reads the machine as the container sees it (DESIGN §6, steps 1–3): the GPUs it was given, their
 * NUMA nodes and the CPUs it may use. Every path is under one of the three roots, so the tests
 * point them at fixture trees. Nothing read here is ever run or used as a format string.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "numa_exec.h"

/* procfs and sysfs files of interest are small; an information file is under 1 KiB. */
#define FILE_CAP 65536

typedef struct {
	int has_cpus;
	unsigned long id;
} node_info;

static ssize_t read_file(const char *path, char *buffer, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t used = 0;
	if (fd < 0)
		return -1;
	while (used < cap) {
		ssize_t n = read(fd, buffer + used, cap - used);
		if (n < 0) {
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		used += (size_t)n;
	}
	close(fd);
	return (ssize_t)used;
}

static char scratch[FILE_CAP];

/* The first line of a file, trimmed; "" when it cannot be read. */
static void first_line(const char *path, char *out, size_t cap)
{
	ssize_t n = read_file(path, scratch, sizeof(scratch));
	if (n < 0)
		n = 0;
	ne_first_line(scratch, (size_t)n, out, cap);
}

/* Adds the CPUs (or nodes) of a one-line cpulist file to set; adds none when it cannot be read. */
static void read_cpulist(const char *path, ne_cpuset *set)
{
	ssize_t n = read_file(path, scratch, sizeof(scratch));
	if (n > 0) {
		const char *newline = memchr(scratch, '\n', (size_t)n);
		ne_cpulist_parse(set, scratch, newline ? (size_t)(newline - scratch) : (size_t)n);
	}
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static int compare_gpus(const void *a, const void *b)
{
	const ne_gpu *x = a, *y = b;
	/* Bus order, with domains of any width (Intel VMD uses 5+ digits); partitions by minor. */
	unsigned long dx = strtoul(x->bdf, NULL, 16), dy = strtoul(y->bdf, NULL, 16);
	if (dx != dy)
		return dx < dy ? -1 : 1;
	int rest = strcmp(strchr(x->bdf, ':'), strchr(y->bdf, ':'));
	if (rest)
		return rest;
	return x->minor < y->minor ? -1 : x->minor > y->minor;
}

static void find_nvidia(const ne_roots *roots, ne_gpu *gpus, int *count)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/driver/nvidia/gpus", roots->procfs);
	DIR *dir = opendir(path);
	if (!dir)
		return;
	struct dirent *entry;
	while ((entry = readdir(dir)) && *count < NE_MAX_GPUS) {
		ne_nvidia_info info;
		ne_gpu *gpu = &gpus[*count];
		if (entry->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/driver/nvidia/gpus/%s/information", roots->procfs,
			 entry->d_name);
		ssize_t n = read_file(path, scratch, sizeof(scratch));
		if (n < 0)
			continue;
		ne_parse_nvidia_info(scratch, (size_t)n, &info);
		/* The runtime exposes only the allocated GPUs in /dev; procfs lists every GPU. */
		snprintf(path, sizeof(path), "%s/nvidia%lu", roots->dev, info.minor);
		if (!info.has_minor || !exists(path))
			continue;
		if (ne_normalize_bdf(entry->d_name, strlen(entry->d_name), gpu->bdf) != 0)
			continue;
		gpu->vendor = NE_NVIDIA;
		gpu->minor = 0;
		memcpy(gpu->uuid, info.uuid, sizeof(gpu->uuid));
		memcpy(gpu->model, info.model, sizeof(gpu->model));
		(*count)++;
	}
	closedir(dir);
}

/* KFD topology: render minor → bus id, for AMD partitions whose render node has no PCI device. */
static int kfd_bdf(const ne_roots *roots, unsigned long minor, char bdf[NE_BDF_SIZE])
{
	char path[PATH_MAX];
	int found = -1;
	snprintf(path, sizeof(path), "%s/class/kfd/kfd/topology/nodes", roots->sysfs);
	DIR *dir = opendir(path);
	if (!dir)
		return -1;
	struct dirent *entry;
	while (found != 0 && (entry = readdir(dir))) {
		unsigned long render;
		if (entry->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/class/kfd/kfd/topology/nodes/%s/properties",
			 roots->sysfs, entry->d_name);
		ssize_t n = read_file(path, scratch, sizeof(scratch));
		if (n >= 0 && ne_parse_kfd_properties(scratch, (size_t)n, &render, bdf) == 0 &&
		    render == minor)
			found = 0;
	}
	closedir(dir);
	return found;
}

static void find_amd(const ne_roots *roots, ne_gpu *gpus, int *count)
{
	char path[PATH_MAX], resolved[PATH_MAX], value[NE_NAME_SIZE];
	snprintf(path, sizeof(path), "%s/dri", roots->dev);
	DIR *dir = opendir(path);
	if (!dir)
		return;
	struct dirent *entry;
	while ((entry = readdir(dir)) && *count < NE_MAX_GPUS) {
		ne_gpu *gpu = &gpus[*count];
		unsigned long minor;
		if (strncmp(entry->d_name, "renderD", 7) != 0 ||
		    ne_parse_uint(entry->d_name + 7, strlen(entry->d_name + 7), 1UL << 20, &minor) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/dri/%s", roots->dev, entry->d_name);
		if (!exists(path))
			continue;
		snprintf(path, sizeof(path), "%s/class/drm/renderD%lu/device", roots->sysfs, minor);
		const char *base = realpath(path, resolved) ? strrchr(resolved, '/') : NULL;
		if (!(base && ne_normalize_bdf(base + 1, strlen(base + 1), gpu->bdf) == 0 &&
		      strcmp(base + 1, gpu->bdf) == 0) &&
		    kfd_bdf(roots, minor, gpu->bdf) != 0)
			continue;
		/* Render nodes of other vendors (an Intel iGPU, nvidia-drm) are not ours to count. */
		snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/vendor", roots->sysfs, gpu->bdf);
		first_line(path, value, sizeof(value));
		if (strcmp(value, "0x1002") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/class", roots->sysfs, gpu->bdf);
		first_line(path, value, sizeof(value));
		if (strncmp(value, "0x03", 4) != 0 && strncmp(value, "0x12", 4) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/unique_id", roots->sysfs, gpu->bdf);
		first_line(path, value, sizeof(value));
		/* ROCm names a GPU "GPU-<unique_id>" (rocminfo, ROCR_VISIBLE_DEVICES). */
		snprintf(gpu->uuid, sizeof(gpu->uuid), "%s%.100s", value[0] ? "GPU-" : "", value);
		snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/product_name", roots->sysfs,
			 gpu->bdf);
		first_line(path, gpu->model, sizeof(gpu->model));
		gpu->vendor = NE_AMD;
		gpu->minor = minor;
		(*count)++;
	}
	closedir(dir);
}

/* DESIGN §5, the same rule as gpunuma.topology.resolve_cpu_node: a CPU-bearing node as is; a
 * memory-only node to the nearest CPU-bearing node by its distance row (ties: lower id); -1 or an
 * offline node to the only CPU-bearing node if there is exactly one; else -1 (unknown). */
static long resolve(const ne_roots *roots, long reported, const node_info *nodes, int count)
{
	int cpu_nodes = 0, position = -1;
	long only = -1;
	for (int k = 0; k < count; k++) {
		if (nodes[k].has_cpus) {
			cpu_nodes++;
			only = (long)nodes[k].id;
		}
		if (reported >= 0 && nodes[k].id == (unsigned long)reported)
			position = k;
	}
	if (position >= 0 && nodes[position].has_cpus)
		return reported;
	if (position >= 0) {
		char path[PATH_MAX];
		unsigned long row[NE_MAX_NODES];
		snprintf(path, sizeof(path), "%s/devices/system/node/node%ld/distance", roots->sysfs,
			 reported);
		ssize_t n = read_file(path, scratch, sizeof(scratch));
		if (n >= 0 && ne_parse_distances(scratch, (size_t)n, row, NE_MAX_NODES) == count) {
			long best = -1;
			unsigned long best_distance = 0;
			for (int k = 0; k < count; k++) {
				if (!nodes[k].has_cpus)
					continue;
				if (best < 0 || row[k] < best_distance ||
				    (row[k] == best_distance && (long)nodes[k].id < best)) {
					best = (long)nodes[k].id;
					best_distance = row[k];
				}
			}
			if (best >= 0)
				return best;
		}
	}
	return cpu_nodes == 1 ? only : -1;
}

static char *join_nodes(const unsigned long *ids, int count)
{
	char *out = malloc((size_t)count * 6 + 1);
	size_t used = 0;
	if (!out)
		return NULL;
	out[0] = '\0';
	for (int i = 0; i < count; i++)
		used += (size_t)sprintf(out + used, "%s%lu", i ? "," : "", ids[i]);
	return out;
}

static ne_cpuset node_cpus, allowed;
static ne_gpu gpus[NE_MAX_GPUS];
static node_info nodes[NE_MAX_NODES];

int ne_discover(const ne_roots *roots, ne_plan *plan)
{
	char path[PATH_MAX];
	int count = 0;
	ne_selection selected;
	ne_text hidden;

	ne_text_clear(&plan->problem);
	ne_text_clear(&plan->notes);
	ne_text_clear(&hidden);
	ne_cpuset_clear(&plan->cpuset);
	plan->node_count = 0;
	plan->gpus = plan->numa = plan->cpus = NULL;

	/* 1. The GPUs, in bus order, then narrowed as the application numbers them. */
	find_nvidia(roots, gpus, &count);
	find_amd(roots, gpus, &count);
	qsort(gpus, (size_t)count, sizeof(gpus[0]), compare_gpus);
	ne_select(gpus, count, roots->lookup, roots->context, &selected, &plan->notes, &hidden);

	/* One bus id per GPU: partitions of one GPU are one entry. */
	const char *bus[NE_MAX_GPUS];
	int buses = 0;
	plan->gpus = malloc((size_t)selected.count * NE_BDF_SIZE + 1);
	if (!plan->gpus)
		return -1;
	plan->gpus[0] = '\0';
	for (int i = 0; i < selected.count; i++) {
		const char *bdf = gpus[selected.index[i]].bdf;
		int seen = 0;
		for (int j = 0; j < buses; j++)
			seen |= strcmp(bus[j], bdf) == 0;
		if (seen)
			continue;
		if (buses)
			strcat(plan->gpus, ",");
		strcat(plan->gpus, bdf);
		bus[buses++] = bdf;
	}

	/* 2. The NUMA nodes: every online node and whether it has CPUs. */
	ne_cpuset_clear(&node_cpus);
	snprintf(path, sizeof(path), "%s/devices/system/node/online", roots->sysfs);
	read_cpulist(path, &node_cpus);
	int node_count = 0;
	for (unsigned long id = 0; id < NE_MAX_NODES; id++) {
		if (!ne_cpuset_has(&node_cpus, id))
			continue;
		snprintf(path, sizeof(path), "%s/devices/system/node/node%lu/cpulist", roots->sysfs, id);
		ne_cpuset_clear(&allowed);
		read_cpulist(path, &allowed);
		nodes[node_count].id = id;
		nodes[node_count].has_cpus = !ne_cpuset_empty(&allowed);
		node_count++;
	}
	int cpu_nodes = 0;
	for (int k = 0; k < node_count; k++)
		cpu_nodes += nodes[k].has_cpus;

	if (buses == 0 && hidden.len)
		ne_text_add(&plan->problem, "%s", hidden.text);
	else if (buses == 0)
		ne_text_add(&plan->problem, "no GPU found (no %s/driver/nvidia/gpus/*/information with its "
			    "/dev/nvidiaN, no AMD /dev/dri/renderD*)", roots->procfs);
	else if (node_count == 0)
		ne_text_add(&plan->problem, "no NUMA nodes in %s/devices/system/node", roots->sysfs);

	int used[NE_MAX_NODES] = {0};
	for (int i = 0; !plan->problem.len && i < buses; i++) {
		char value[64];
		snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/numa_node", roots->sysfs, bus[i]);
		ssize_t n = read_file(path, scratch, sizeof(scratch));
		long reported = n > 0 ? ne_parse_node(scratch, (size_t)n) : -1;
		long node = resolve(roots, reported, nodes, node_count);
		if (node < 0) {
			ne_first_line(scratch, n > 0 ? (size_t)n : 0, value, sizeof(value));
			ne_text_add(&plan->problem, "the NUMA node of GPU %s is unknown (numa_node %s, %d "
				    "NUMA nodes with CPUs)", bus[i], value[0] ? value : "unreadable",
				    cpu_nodes);
		} else {
			used[node] = 1;
		}
	}

	/* 3. The CPUs: the CPUs of those nodes that this process may use. */
	if (!plan->problem.len) {
		ne_cpuset_clear(&node_cpus);
		for (int k = 0; k < node_count; k++) {
			if (!used[nodes[k].id])
				continue;
			plan->nodes[plan->node_count++] = nodes[k].id;
			snprintf(path, sizeof(path), "%s/devices/system/node/node%lu/cpulist", roots->sysfs,
				 nodes[k].id);
			read_cpulist(path, &node_cpus);
		}
		plan->cpuset = node_cpus;
		snprintf(path, sizeof(path), "%s/self/status", roots->procfs);
		ssize_t n = read_file(path, scratch, sizeof(scratch) - 1);
		const char *list = NULL;
		size_t list_len = 0;
		if (n > 0 && ne_status_field(scratch, (size_t)n, "Cpus_allowed_list", &list, &list_len)) {
			ne_cpuset_clear(&allowed);
			ne_cpulist_parse(&allowed, list, list_len);
			ne_cpuset_and(&plan->cpuset, &allowed);
		}
		if (ne_cpuset_empty(&plan->cpuset)) {
			char *local = malloc(NE_CPULIST_CAP);
			char wanted[256];
			if (!local)
				return -1;
			ne_cpulist_format(&node_cpus, local, NE_CPULIST_CAP);
			ne_first_line(list ? list : "", list_len, wanted, sizeof(wanted));
			char *numa = join_nodes(plan->nodes, plan->node_count);
			ne_text_add(&plan->problem, "none of the CPUs of NUMA node %s (%.200s) is in the "
				    "Cpus_allowed_list of this process (%s)", numa ? numa : "?", local, wanted);
			free(numa);
			free(local);
		}
	}
	if (plan->problem.len)
		ne_cpuset_clear(&plan->cpuset);
	plan->numa = join_nodes(plan->nodes, plan->node_count);
	plan->cpus = malloc(NE_CPULIST_CAP);
	if (!plan->numa || !plan->cpus)
		return -1;
	ne_cpulist_format(&plan->cpuset, plan->cpus, NE_CPULIST_CAP);
	return 0;
}

void ne_plan_free(ne_plan *plan)
{
	free(plan->gpus);
	free(plan->numa);
	free(plan->cpus);
}
