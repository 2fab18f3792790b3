/*
 * numa-exec: run a command bound to the NUMA node(s) local to the GPUs this container was given.
 *
 *   numa-exec -- COMMAND [ARG...]
 *   numa-exec --install DIR      copy this executable to DIR/numa-exec (the init container)
 *
 * The contract is DESIGN §6 and README.md, "numa-exec". It needs nothing from the image it runs in: it is
 * one static executable that reads procfs/sysfs, binds with sched_setaffinity and set_mempolicy
 * itself and ends in execvp, so COMMAND keeps this process's PID (PID 1 of the container) and gets
 * its signals directly. It never evaluates text from the environment and writes no files (except
 * DIR/numa-exec under --install). A refusal is exit status 125 and one "gpunuma:" line on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "numa_exec.h"

#ifndef NE_VERSION
#define NE_VERSION "unknown"
#endif

#define EXIT_REFUSED 125
#define EXIT_INSTALL_FAILED 1
#define EXIT_NOT_FOUND 127
#define EXIT_CANNOT_RUN 126

/* <linux/mempolicy.h>'s modes; MPOL_PREFERRED_MANY is Linux 5.15+. */
#define NE_MPOL_PREFERRED 1
#define NE_MPOL_BIND 2
#define NE_MPOL_PREFERRED_MANY 5

static const char usage[] = "usage: numa-exec -- COMMAND [ARG...]\n"
			    "       numa-exec --install DIR";

static int dry_run;
static const char *policy = "preferred";
static const char *mem = NULL; /* set once the plan is known: bind, preferred or local */
static ne_plan plan;

static const char *lookup(const char *name, void *context)
{
	(void)context;
	return getenv(name);
}

/* Writes one whole line to stderr with a single write(2), so lines of parallel ranks don't mix. */
static void say(const char *prefix, const char *text, const char *suffix)
{
	size_t size = strlen(prefix) + strlen(text) + strlen(suffix) + 2;
	char *line = malloc(size);
	if (!line)
		return;
	snprintf(line, size, "%s%s%s\n", prefix, text, suffix);
	size_t left = strlen(line);
	for (const char *at = line; left > 0;) {
		ssize_t n = write(STDERR_FILENO, at, left);
		if (n <= 0)
			break;
		at += n;
		left -= (size_t)n;
	}
	free(line);
}

static void print_plan(const char *cpus, char *const *command)
{
	printf("gpus=%s\nnuma=%s\ncpus=%s\nmem=%s\nexec=", plan.gpus ? plan.gpus : "",
	       plan.numa ? plan.numa : "", cpus, mem);
	for (int i = 0; command && command[i]; i++)
		printf("%s%s", i ? " " : "", command[i]);
	printf("\n");
	fflush(stdout);
}

static void __attribute__((noreturn, format(printf, 1, 2))) refuse(const char *format, ...)
{
	char message[NE_TEXT_SIZE * 2];
	va_list args;
	va_start(args, format);
	vsnprintf(message, sizeof(message), format, args);
	va_end(args);
	if (dry_run && mem)
		print_plan("", NULL);
	say("gpunuma: ", message, "");
	exit(EXIT_REFUSED);
}

/* --install DIR: a temporary file in DIR, made executable, renamed over DIR/numa-exec, so a
 * container that starts while the init container is retried never sees half a file. */
static int install(const char *directory)
{
	char temporary[PATH_MAX], target[PATH_MAX], buffer[65536];
	struct stat st;
	const char *self = "/proc/self/exe";
	if (stat(directory, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "numa-exec --install: %s %s; create it first (in a pod: mount the "
			"gpunuma-launcher emptyDir there)\n", directory,
			errno == ENOENT ? "does not exist" : "is not a directory");
		return EXIT_INSTALL_FAILED;
	}
	int source = open(self, O_RDONLY | O_CLOEXEC);
	if (source < 0) {
		fprintf(stderr, "numa-exec --install: cannot read %s (%s); /proc must be mounted\n", self,
			strerror(errno));
		return EXIT_INSTALL_FAILED;
	}
	snprintf(target, sizeof(target), "%s/numa-exec", directory);
	int out = -1;
	for (int attempt = 0; out < 0 && attempt < 100; attempt++) {
		snprintf(temporary, sizeof(temporary), "%s/.numa-exec.%ld.%d", directory, (long)getpid(),
			 attempt);
		out = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (out < 0 && errno != EEXIST)
			break;
	}
	if (out < 0) {
		fprintf(stderr, "numa-exec --install: cannot write into %s (%s); mount it writable for "
			"this container\n", directory, strerror(errno));
		close(source);
		return EXIT_INSTALL_FAILED;
	}
	int failed = 0;
	for (;;) {
		ssize_t n = read(source, buffer, sizeof(buffer));
		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || write(out, buffer, (size_t)n) != n) {
			failed = errno ? errno : EIO;
			break;
		}
	}
	close(source);
	/* fchmod on the open file: the umask plays no part. */
	if (!failed && (fchmod(out, 0755) != 0 || fsync(out) != 0))
		failed = errno;
	if (close(out) != 0 && !failed)
		failed = errno;
	if (!failed && rename(temporary, target) != 0)
		failed = errno;
	if (failed) {
		unlink(temporary);
		fprintf(stderr, "numa-exec --install: cannot install %s (%s)\n", target, strerror(failed));
		return EXIT_INSTALL_FAILED;
	}
	printf("numa-exec: installed %s\n", target);
	return 0;
}

static int bind_cpus(const ne_cpuset *set)
{
	size_t words = NE_MAX_CPUS / 64;
	while (words > 1 && !set->bits[words - 1])
		words--;
	return (int)syscall(SYS_sched_setaffinity, 0, words * sizeof(set->bits[0]), set->bits);
}

static int bind_memory(int mode)
{
	uint64_t mask[NE_MAX_NODES / 64] = {0};
	for (int i = 0; i < plan.node_count; i++)
		mask[plan.nodes[i] / 64] |= (uint64_t)1 << (plan.nodes[i] % 64);
	/* The kernel reads maxnode - 1 bits (numactl passes the same +1). */
	return (int)syscall(SYS_set_mempolicy, mode, mask, (unsigned long)NE_MAX_NODES + 1);
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *value = getenv(name);
	return value && *value ? value : fallback;
}

int main(int argc, char **argv)
{
	char *const *command;
	if (argc < 2)
		refuse("no command given; %s", usage);
	if (strcmp(argv[1], "--") == 0) {
		command = argv + 2;
	} else if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		printf("%s\nRuns COMMAND bound to the NUMA nodes of its GPUs; GPUNUMA_DRY_RUN=1 prints the "
		       "plan.\n--install DIR copies numa-exec to DIR/numa-exec.\n", usage);
		return 0;
	} else if (strcmp(argv[1], "--version") == 0) {
		printf("numa-exec %s\n", NE_VERSION);
		return 0;
	} else if (strcmp(argv[1], "--install") == 0) {
		if (argc != 3 || !*argv[2]) {
			fprintf(stderr, "numa-exec --install: expected one directory; %s\n", usage);
			return EXIT_INSTALL_FAILED;
		}
		return install(argv[2]);
	} else {
		char quoted[96];
		ne_text_quote(quoted, sizeof(quoted), argv[1]);
		refuse("expected -- before the command, got %s; %s", quoted, usage);
	}
	if (!command[0])
		refuse("no command after --; %s", usage);
	char name[96];
	ne_text_quote(name, sizeof(name), command[0]);
	/* The name without its quotes, for "not starting NAME". */
	memmove(name, name + 1, strlen(name));
	name[strlen(name) - 1] = '\0';

	policy = env_or("GPUNUMA_POLICY", "preferred");
	if (strcmp(policy, "preferred") != 0 && strcmp(policy, "strict") != 0 &&
	    strcmp(policy, "cpu-only") != 0) {
		char quoted[96];
		ne_text_quote(quoted, sizeof(quoted), policy);
		refuse("unknown GPUNUMA_POLICY %s; use preferred, strict or cpu-only", quoted);
	}
	int strict = strcmp(policy, "strict") == 0;
	const char *dry = getenv("GPUNUMA_DRY_RUN"), *quiet = getenv("GPUNUMA_QUIET");
	dry_run = dry && strcmp(dry, "1") == 0;

	ne_roots roots = {
		.sysfs = env_or("GPUNUMA_SYSFS_ROOT", "/sys"),
		.procfs = env_or("GPUNUMA_PROCFS_ROOT", "/proc"),
		.dev = env_or("GPUNUMA_DEV_ROOT", "/dev"),
		.lookup = lookup,
		.context = NULL,
	};
	if (ne_discover(&roots, &plan) != 0) {
		mem = "local";
		if (strict)
			refuse("strict policy: out of memory while reading the topology; not starting %s", name);
		ne_text_add(&plan.notes, "out of memory while reading the topology");
		if (!plan.gpus || !plan.numa || !plan.cpus) {
			execvp(command[0], command);
			return errno == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
		}
	}

	mem = strict ? "bind" : "local";
	const char *memory = mem; /* the planned policy; mem follows what the kernel accepts */
	if (plan.problem.len) {
		if (strict)
			refuse("strict policy: %s; not starting %s", plan.problem.text, name);
		ne_text_add(&plan.notes, "%s", plan.problem.text);
	} else if (strcmp(policy, "preferred") == 0) {
		memory = mem = "preferred";
	}

	/* The probe is the call itself: the kernel (or seccomp) answers for real, so what the
	 * decision line says is what the command gets. A dry run makes no call. */
	if (!plan.problem.len && !dry_run) {
		if (bind_cpus(&plan.cpuset) != 0) {
			int error = errno;
			if (strict)
				refuse("strict policy: the kernel refused to bind CPUs %s (sched_setaffinity: %s); "
				       "not starting %s", plan.cpus, strerror(error), name);
			ne_text_add(&plan.notes, "the kernel refused to bind CPUs %s (sched_setaffinity: %s): "
				    "running unpinned", plan.cpus, strerror(error));
			plan.cpus[0] = '\0';
			mem = "local";
		} else if (strcmp(memory, "local") != 0) {
			int several = plan.node_count > 1;
			int mode = strict ? NE_MPOL_BIND : several ? NE_MPOL_PREFERRED_MANY : NE_MPOL_PREFERRED;
			if (bind_memory(mode) != 0) {
				int error = errno;
				if (strict && error == EPERM)
					refuse("strict policy: the kernel refused to bind memory to NUMA node %s "
					       "(set_mempolicy: %s); memory binding needs the SYS_NICE capability "
					       "under the default seccomp profile, or use policy preferred; not "
					       "starting %s", plan.numa, strerror(error), name);
				if (strict)
					refuse("strict policy: the kernel refused to bind memory to NUMA node %s "
					       "(set_mempolicy: %s); not starting %s", plan.numa, strerror(error), name);
				if (error == EPERM)
					ne_text_add(&plan.notes, "set_mempolicy was refused (%s): binding CPUs only; "
						    "the SYS_NICE capability allows a memory policy", strerror(error));
				else if (several)
					ne_text_add(&plan.notes, "the kernel refused to prefer NUMA nodes %s "
						    "(set_mempolicy MPOL_PREFERRED_MANY: %s; Linux before 5.15 lacks it): "
						    "binding CPUs only, which keeps first-touch memory on their nodes",
						    plan.numa, strerror(error));
				else
					ne_text_add(&plan.notes, "the kernel refused to prefer NUMA node %s "
						    "(set_mempolicy: %s): binding CPUs only", plan.numa, strerror(error));
				mem = "local";
			}
		}
	}
	if (plan.problem.len)
		plan.cpus[0] = '\0';

	if (!quiet || strcmp(quiet, "1") != 0) {
		size_t size = strlen(plan.gpus) + strlen(plan.numa) + strlen(plan.cpus) + 128;
		char *line = malloc(size);
		if (line) {
			snprintf(line, size, "policy=%s gpus=%s numa=%s cpus=%s mem=%s%s", policy,
				 plan.gpus, plan.numa, plan.cpus, mem, plan.notes.len ? ": " : "");
			say("gpunuma: ", line, plan.notes.text);
			free(line);
		}
	}
	if (dry_run) {
		print_plan(plan.cpus, command);
		return 0;
	}
	execvp(command[0], command);
	int error = errno;
	char message[NE_TEXT_SIZE];
	snprintf(message, sizeof(message), "cannot run %s (%s)", name, strerror(error));
	say("gpunuma: ", message, "");
	return error == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
}
