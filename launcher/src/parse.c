/*
 * Parsers of what the kernel and the drivers write. No I/O: every function takes bytes and a
 * length (not NUL-terminated strings), so the fuzzer can hand them anything. Unreadable input is
 * skipped, never trusted: a bad cpulist part adds no CPU, a bad node reads as -1 (unknown).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "numa_exec.h"

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static void trim(const char **text, size_t *len)
{
	while (*len > 0 && ne_is_blank(**text)) {
		(*text)++;
		(*len)--;
	}
	while (*len > 0 && ne_is_blank((*text)[*len - 1]))
		(*len)--;
}

void ne_cpuset_clear(ne_cpuset *set) { memset(set, 0, sizeof(*set)); }

void ne_cpuset_add(ne_cpuset *set, unsigned long cpu)
{
	if (cpu < NE_MAX_CPUS)
		set->bits[cpu / 64] |= (uint64_t)1 << (cpu % 64);
}

int ne_cpuset_has(const ne_cpuset *set, unsigned long cpu)
{
	return cpu < NE_MAX_CPUS && (set->bits[cpu / 64] >> (cpu % 64)) & 1;
}

int ne_cpuset_empty(const ne_cpuset *set)
{
	for (size_t i = 0; i < NE_MAX_CPUS / 64; i++)
		if (set->bits[i])
			return 0;
	return 1;
}

void ne_cpuset_and(ne_cpuset *set, const ne_cpuset *other)
{
	for (size_t i = 0; i < NE_MAX_CPUS / 64; i++)
		set->bits[i] &= other->bits[i];
}

void ne_cpuset_or(ne_cpuset *set, const ne_cpuset *other)
{
	for (size_t i = 0; i < NE_MAX_CPUS / 64; i++)
		set->bits[i] |= other->bits[i];
}

int ne_parse_uint(const char *text, size_t len, unsigned long max, unsigned long *out)
{
	unsigned long value = 0;
	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit(text[i]))
			return -1;
		unsigned long digit = (unsigned long)(text[i] - '0');
		if (digit > max || value > (max - digit) / 10)
			return -1;
		value = value * 10 + digit;
	}
	*out = value;
	return 0;
}

void ne_cpulist_parse(ne_cpuset *set, const char *text, size_t len)
{
	size_t start = 0;
	while (start <= len) {
		size_t end = start;
		while (end < len && text[end] != ',')
			end++;
		const char *part = text + start;
		size_t part_len = end - start;
		trim(&part, &part_len);
		const char *dash = memchr(part, '-', part_len);
		unsigned long low, high;
		size_t low_len = dash ? (size_t)(dash - part) : part_len;
		if (ne_parse_uint(part, low_len, NE_MAX_CPUS - 1, &low) == 0) {
			high = low;
			if (!dash || ne_parse_uint(dash + 1, part_len - low_len - 1, NE_MAX_CPUS - 1,
						   &high) == 0)
				for (unsigned long cpu = low; cpu <= high; cpu++)
					ne_cpuset_add(set, cpu);
		}
		start = end + 1;
	}
}

int ne_cpulist_format(const ne_cpuset *set, char *out, size_t cap)
{
	size_t used = 0;
	long start = -1;
	if (cap == 0)
		return -1;
	out[0] = '\0';
	for (long cpu = 0; cpu <= NE_MAX_CPUS; cpu++) {
		/* Whole empty words at once: the set is NE_MAX_CPUS bits, most of them zero. */
		if (start < 0 && cpu % 64 == 0 && cpu < NE_MAX_CPUS && !set->bits[cpu / 64]) {
			cpu += 63;
			continue;
		}
		int has = cpu < NE_MAX_CPUS && ne_cpuset_has(set, (unsigned long)cpu);
		if (has && start < 0)
			start = cpu;
		if (has || start < 0)
			continue;
		int n = start == cpu - 1
			? snprintf(out + used, cap - used, "%s%ld", used ? "," : "", start)
			: snprintf(out + used, cap - used, "%s%ld-%ld", used ? "," : "", start, cpu - 1);
		if (n < 0 || (size_t)n >= cap - used)
			return -1;
		used += (size_t)n;
		start = -1;
	}
	return (int)used;
}

void ne_first_line(const char *text, size_t len, char *out, size_t cap)
{
	const char *newline = memchr(text, '\n', len);
	if (newline)
		len = (size_t)(newline - text);
	trim(&text, &len);
	if (cap == 0)
		return;
	if (len >= cap)
		len = cap - 1;
	memcpy(out, text, len);
	out[len] = '\0';
}

long ne_parse_node(const char *text, size_t len)
{
	char line[32];
	unsigned long value;
	ne_first_line(text, len, line, sizeof(line));
	const char *digits = line[0] == '-' ? line + 1 : line;
	if (ne_parse_uint(digits, strlen(digits), NE_MAX_NODES - 1, &value) != 0)
		return -1;
	return line[0] == '-' ? -(long)value : (long)value;
}

int ne_normalize_bdf(const char *text, size_t len, char out[NE_BDF_SIZE])
{
	/* DOMAIN:BB:DD.F with 1–8 hex digits of domain (Intel VMD uses 5), or BB:DD.F. */
	char buffer[NE_BDF_SIZE];
	size_t colon = 0, i;
	trim(&text, &len);
	if (len == 7) {
		if (len + 5 >= sizeof(buffer))
			return -1;
		memcpy(buffer, "0000:", 5);
		memcpy(buffer + 5, text, len);
		len += 5;
	} else {
		if (len >= sizeof(buffer))
			return -1;
		memcpy(buffer, text, len);
	}
	buffer[len] = '\0';
	while (colon < len && buffer[colon] != ':')
		colon++;
	if (colon == 0 || colon > 8 || len != colon + 8)
		return -1;
	for (i = 0; i < len; i++) {
		size_t at = i > colon ? i - colon : 0; /* position after the domain's colon */
		int ok = i < colon ? is_hex(buffer[i])
			: i == colon || at == 3 ? buffer[i] == ':'
			: at == 6 ? buffer[i] == '.'
			: at == 7 ? buffer[i] >= '0' && buffer[i] <= '7'
			: is_hex(buffer[i]);
		if (!ok)
			return -1;
		out[i] = ne_lower(buffer[i]);
	}
	out[len] = '\0';
	return 0;
}

/* The next '\n'-separated line of text from *start on; advances *start past it. */
static int next_line(const char *text, size_t len, size_t *start, const char **line,
		     size_t *line_len)
{
	if (*start >= len)
		return 0;
	const char *newline = memchr(text + *start, '\n', len - *start);
	size_t end = newline ? (size_t)(newline - text) : len;
	*line = text + *start;
	*line_len = end - *start;
	*start = end + 1;
	return 1;
}

/* One "Key: value" line; copies the trimmed value when the key matches. */
static int key_value(const char *line, size_t len, const char *key, char *out, size_t cap)
{
	const char *colon = memchr(line, ':', len);
	if (!colon)
		return 0;
	const char *name = line;
	size_t name_len = (size_t)(colon - line);
	trim(&name, &name_len);
	if (name_len != strlen(key) || memcmp(name, key, name_len) != 0)
		return 0;
	ne_first_line(colon + 1, (size_t)(line + len - colon - 1), out, cap);
	return 1;
}

void ne_parse_nvidia_info(const char *text, size_t len, ne_nvidia_info *info)
{
	char minor[32];
	memset(info, 0, sizeof(*info));
	size_t start = 0;
	const char *line;
	size_t line_len;
	while (next_line(text, len, &start, &line, &line_len)) {
		if (key_value(line, line_len, "Device Minor", minor, sizeof(minor)))
			info->has_minor =
				ne_parse_uint(minor, strlen(minor), 1UL << 20, &info->minor) == 0;
		key_value(line, line_len, "GPU UUID", info->uuid, sizeof(info->uuid));
		key_value(line, line_len, "Model", info->model, sizeof(info->model));
	}
}

int ne_parse_kfd_properties(const char *text, size_t len, unsigned long *render,
			    char bdf[NE_BDF_SIZE])
{
	unsigned long domain = 0, location = 0, minor = 0;
	size_t start = 0;
	const char *line;
	size_t line_len;
	while (next_line(text, len, &start, &line, &line_len)) {
		trim(&line, &line_len);
		const char *space = memchr(line, ' ', line_len);
		if (space) {
			size_t key_len = (size_t)(space - line);
			const char *value = space + 1;
			size_t value_len = line_len - key_len - 1;
			trim(&value, &value_len);
			unsigned long parsed;
			if (ne_parse_uint(value, value_len, 0xffffffffUL, &parsed) == 0) {
				if (key_len == 6 && memcmp(line, "domain", 6) == 0)
					domain = parsed;
				else if (key_len == 11 && memcmp(line, "location_id", 11) == 0)
					location = parsed;
				else if (key_len == 16 && memcmp(line, "drm_render_minor", 16) == 0)
					minor = parsed;
			}
		}
	}
	/* CPU nodes of the KFD topology have neither a render minor nor a PCI location. */
	if (minor == 0 || location == 0)
		return -1;
	snprintf(bdf, NE_BDF_SIZE, "%04lx:%02lx:%02lx.%lu", domain & 0xffffffffUL,
		 (location >> 8) & 0xff, (location >> 3) & 0x1f, location & 7);
	*render = minor;
	return 0;
}

int ne_status_field(const char *text, size_t len, const char *key, const char **value,
		    size_t *value_len)
{
	size_t start = 0, key_len = strlen(key);
	const char *line;
	size_t line_len;
	int found = 0;
	while (next_line(text, len, &start, &line, &line_len)) {
		if (line_len > key_len && memcmp(line, key, key_len) == 0 && line[key_len] == ':') {
			*value = line + key_len + 1;
			*value_len = line_len - key_len - 1;
			found = 1;
		}
	}
	return found;
}

int ne_parse_distances(const char *text, size_t len, unsigned long *out, int max)
{
	char line[NE_TEXT_SIZE] = "";
	int count = 0;
	ne_first_line(text, len, line, sizeof(line));
	size_t at = 0, n = strlen(line);
	while (at < n) {
		while (at < n && ne_is_blank(line[at]))
			at++;
		size_t end = at;
		while (end < n && !ne_is_blank(line[end]))
			end++;
		if (end == at)
			break;
		unsigned long value;
		if (count >= max || ne_parse_uint(line + at, end - at, 1UL << 20, &value) != 0)
			return -1;
		out[count++] = value;
		at = end;
	}
	return count;
}

void ne_text_clear(ne_text *t)
{
	t->text[0] = '\0';
	t->len = 0;
}

void ne_text_add(ne_text *t, const char *format, ...)
{
	char part[NE_TEXT_SIZE];
	va_list args;
	va_start(args, format);
	vsnprintf(part, sizeof(part), format, args);
	va_end(args);
	/* One line on stderr whatever the values held: no newline can split the decision line. */
	for (char *c = part; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = ' ';
	int n = snprintf(t->text + t->len, sizeof(t->text) - t->len, "%s%s", t->len ? "; " : "",
			 part);
	if (n > 0)
		t->len += (size_t)n < sizeof(t->text) - t->len ? (size_t)n : sizeof(t->text) - t->len - 1;
}

void ne_text_quote(char *out, size_t cap, const char *value)
{
	size_t used = 0, i;
	if (cap < 8)
		return;
	out[used++] = '"';
	for (i = 0; value[i] && used + 5 < cap && i < 64; i++)
		out[used++] = ((unsigned char)value[i] < 0x20 || value[i] == 0x7f) ? '?' : value[i];
	if (value[i] && used + 4 < cap) {
		memcpy(out + used, "...", 3);
		used += 3;
	}
	out[used++] = '"';
	out[used] = '\0';
}
