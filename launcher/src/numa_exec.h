/*
 * numa-exec: shared types of the launcher (DESIGN §6).
 *
 * parse.c   pure parsers of what the kernel writes (cpulists, procfs information files, KFD
 *           properties, sysfs values): no I/O, the part the fuzzer drives.
 * select.c  which of the container's GPUs the application uses: the *_VISIBLE_DEVICES variables
 *           and the rank, as pure functions of a GPU list and an environment lookup.
 * discover.c reads the trees under GPUNUMA_SYSFS_ROOT, GPUNUMA_PROCFS_ROOT and GPUNUMA_DEV_ROOT.
 * main.c    the command line, the policy, the binding syscalls and the exec.
 */
#ifndef NUMA_EXEC_H
#define NUMA_EXEC_H

#include <stddef.h>
#include <stdint.h>

/* The kernel's largest NR_CPUS (8192) and MAX_NUMNODES (1024); the same CPU ceiling as
 * gpunuma.topology.cpulist.MAX_CPUS, so both sides read the same lists the same way. */
#define NE_MAX_CPUS 8192
#define NE_MAX_NODES 1024
#define NE_MAX_GPUS 256
#define NE_TEXT_SIZE 4096
#define NE_BDF_SIZE 32
#define NE_NAME_SIZE 128

typedef struct {
	uint64_t bits[NE_MAX_CPUS / 64];
} ne_cpuset;

/* Byte classes shared by the parsers: bytes, not the locale's characters. */
static inline int ne_is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
static inline char ne_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* Text that grows by "; "-separated parts and never holds a control character. */
typedef struct {
	char text[NE_TEXT_SIZE];
	size_t len;
} ne_text;

enum ne_vendor { NE_NVIDIA = 0, NE_AMD = 1 };

typedef struct {
	enum ne_vendor vendor;
	char bdf[NE_BDF_SIZE];  /* "0000:1b:00.0", lower case */
	char uuid[NE_NAME_SIZE]; /* "GPU-…" or "" */
	char model[NE_NAME_SIZE];
	unsigned long minor; /* AMD render minor: partitions of one GPU sort by it */
} ne_gpu;

/* parse.c ------------------------------------------------------------------------------------ */

void ne_cpuset_clear(ne_cpuset *set);
void ne_cpuset_add(ne_cpuset *set, unsigned long cpu);
int ne_cpuset_has(const ne_cpuset *set, unsigned long cpu);
int ne_cpuset_empty(const ne_cpuset *set);
void ne_cpuset_and(ne_cpuset *set, const ne_cpuset *other);
void ne_cpuset_or(ne_cpuset *set, const ne_cpuset *other);
/* Adds a kernel cpulist ("0-55,112-167"); parts that are not "N" or "N-M" are skipped. */
void ne_cpulist_parse(ne_cpuset *set, const char *text, size_t len);
/* The kernel's format: ascending, runs as ranges. Returns the length, or -1 if cap is too small. */
int ne_cpulist_format(const ne_cpuset *set, char *out, size_t cap);
/* Enough for any set: a part ("8191,") takes at most 6 bytes per CPU. */
#define NE_CPULIST_CAP ((size_t)NE_MAX_CPUS * 6 + 1)

/* A digits-only number not above max; returns 0 on success. */
int ne_parse_uint(const char *text, size_t len, unsigned long max, unsigned long *out);
/* The first line with blanks trimmed, copied into out (NUL-terminated, truncated to cap). */
void ne_first_line(const char *text, size_t len, char *out, size_t cap);
/* A sysfs numa_node value: an integer, or -1 for anything else (and for |n| ≥ NE_MAX_NODES). */
long ne_parse_node(const char *text, size_t len);
/* A lower-case bus id with a domain ("1b:00.0" gains "0000:"); returns 0 if it is one. */
int ne_normalize_bdf(const char *text, size_t len, char out[NE_BDF_SIZE]);

/* /proc/driver/nvidia/gpus/<bdf>/information: "Device Minor", "GPU UUID", "Model". */
typedef struct {
	int has_minor;
	unsigned long minor;
	char uuid[NE_NAME_SIZE];
	char model[NE_NAME_SIZE];
} ne_nvidia_info;
void ne_parse_nvidia_info(const char *text, size_t len, ne_nvidia_info *info);

/* KFD topology node properties: its render minor and bus id; returns 0 when it has both. */
int ne_parse_kfd_properties(const char *text, size_t len, unsigned long *render,
			    char bdf[NE_BDF_SIZE]);

/* A /proc/PID/status field ("Cpus_allowed_list"): its value after the colon, untrimmed, of the
 * last line that has it; returns 1 when found. */
int ne_status_field(const char *text, size_t len, const char *key, const char **value,
		    size_t *value_len);

/* A distance row ("10 21"); returns the number of values (at most max). */
int ne_parse_distances(const char *text, size_t len, unsigned long *out, int max);

void ne_text_clear(ne_text *t);
void ne_text_add(ne_text *t, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Appends text as a quoted value: control characters shown as '?', cut at 64 bytes. */
void ne_text_quote(char *out, size_t cap, const char *value);

/* select.c ----------------------------------------------------------------------------------- */

typedef const char *(*ne_getenv_fn)(const char *name, void *context);

/* Indices into the GPU array: the devices the application uses, in its own device order. */
typedef struct {
	int index[NE_MAX_GPUS];
	int count;
} ne_selection;

/* gpus[] in bus order. Fills out; notes say what the user may want to know. When a variable
 * leaves the application no GPU at all, hidden says which and why. */
void ne_select(const ne_gpu *gpus, int count, ne_getenv_fn lookup, void *context,
	       ne_selection *out, ne_text *notes, ne_text *hidden);

/* discover.c --------------------------------------------------------------------------------- */

typedef struct {
	const char *sysfs, *procfs, *dev;
	ne_getenv_fn lookup;
	void *context;
} ne_roots;

typedef struct {
	char *gpus;  /* comma list of bus ids (malloc'd) */
	char *numa;  /* ascending comma list of nodes (malloc'd) */
	char *cpus;  /* cpulist (malloc'd), "" when there is a problem */
	ne_cpuset cpuset;
	unsigned long nodes[NE_MAX_NODES];
	int node_count;
	ne_text problem; /* why there is no binding, or "" */
	ne_text notes;
} ne_plan;

/* Returns 0, or -1 when memory ran out. */
int ne_discover(const ne_roots *roots, ne_plan *plan);
void ne_plan_free(ne_plan *plan);

#endif
