/* LDAP authentication options, PostgreSQL's names and rules (auth-ldap.html): checked one at a
 * time, then as a set; ldapurl (RFC 4516: scheme://host[:port]/basedn?attribute?scope?filter)
 * taken apart by hand, so that config/ needs no libldap. */
#include "config/ldap_options.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ldap_opt_bit {
	OPT_SERVER = 1u << 0,
	OPT_PORT = 1u << 1,
	OPT_SCHEME = 1u << 2,
	OPT_TLS = 1u << 3,
	OPT_PREFIX = 1u << 4,
	OPT_SUFFIX = 1u << 5,
	OPT_BASEDN = 1u << 6,
	OPT_BINDDN = 1u << 7,
	OPT_BINDPASSWD = 1u << 8,
	OPT_ATTR = 1u << 9,
	OPT_FILTER = 1u << 10,
	OPT_URL = 1u << 11,
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

void config_ldap_init(struct config_ldap *o)
{
	memset(o, 0, sizeof *o);
	o->scope = CONFIG_LDAP_SCOPE_SUB;
}

static int copy(char *dst, size_t cap, const char *src, size_t len, const char *name, char *err, size_t errlen)
{
	if (len >= cap)
		return fail(err, errlen, "%s is longer than %zu bytes", name, cap - 1);
	memcpy(dst, src, len);
	dst[len] = '\0';
	return 0;
}

/* A host name or address: what may stand between "ldap://" and ":port" in a URL. */
static bool host_ok(const char *h, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = h[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
		      ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

/* ldapserver: blank-separated host names, normalized to single spaces. */
static int set_server(struct config_ldap *o, const char *v, char *err, size_t errlen)
{
	size_t n = 0;
	for (const char *p = v;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		size_t len = strcspn(p, " \t,");
		if (!host_ok(p, len))
			return fail(err, errlen, "invalid ldapserver host \"%.*s\"", (int)(len > 64 ? 64 : len), p);
		if (n + len + 2 > sizeof o->server)
			return fail(err, errlen, "ldapserver is longer than %zu bytes", sizeof o->server - 1);
		if (n)
			o->server[n++] = ' ';
		memcpy(o->server + n, p, len);
		n += len;
		p += len;
	}
	o->server[n] = '\0';
	if (n == 0)
		return fail(err, errlen, "ldapserver is empty");
	return 0;
}

static int parse_port(const char *s, size_t len)
{
	int v = 0;
	if (len == 0 || len > 5)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v >= 1 && v <= 65535 ? v : -1;
}

/* s[0..len) with %XX decoded into dst (cap bytes, NUL included). A bad escape, or one that
 * decodes to NUL, is an error. */
static int pct_decode(char *dst, size_t cap, const char *s, size_t len, const char *what, char *err, size_t errlen)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch == '%') {
			char hex[3] = { 0 };
			if (i + 2 < len && isxdigit((unsigned char)s[i + 1]) && isxdigit((unsigned char)s[i + 2]))
				memcpy(hex, s + i + 1, 2);
			ch = (char)strtol(hex, NULL, 16); /* "": 0, refused below with a bad escape */
			if (ch == '\0')
				return fail(err, errlen, "invalid %%-escape in the %s of ldapurl", what);
			i += 2;
		}
		if (n + 1 >= cap)
			return fail(err, errlen, "the %s of ldapurl is longer than %zu bytes", what, cap - 1);
		dst[n++] = ch;
	}
	dst[n] = '\0';
	return 0;
}

/* RFC 4516 as PostgreSQL takes it: scheme ldap or ldaps, one host, optional port, and the
 * optional base DN, attribute (the first of a list), scope and filter; extensions refused. */
static int set_url(struct config_ldap *o, const char *url, char *err, size_t errlen)
{
	const char *p;
	int rc;

	if (strncmp(url, "ldap://", 7) == 0) {
		o->ldaps = false;
		p = url + 7;
	} else if (strncmp(url, "ldaps://", 8) == 0) {
		o->ldaps = true;
		p = url + 8;
	} else {
		return fail(err, errlen, "unsupported LDAP URL scheme in \"%.64s\" (ldap:// or ldaps://)", url);
	}
	size_t hostport = strcspn(p, "/?");
	const char *colon = memchr(p, ':', hostport);
	size_t hostlen = colon ? (size_t)(colon - p) : hostport;
	if (!host_ok(p, hostlen))
		return fail(err, errlen, "invalid host in ldapurl \"%.64s\"", url);
	if ((rc = copy(o->server, sizeof o->server, p, hostlen, "the host of ldapurl", err, errlen)) < 0)
		return rc;
	if (colon) {
		o->port = parse_port(colon + 1, hostport - hostlen - 1);
		if (o->port < 0)
			return fail(err, errlen, "invalid port in ldapurl \"%.64s\" (1..65535)", url);
	}
	p += hostport;
	if (*p == '/')
		p++;
	/* The rest: dn ? attributes ? scope ? filter ? extensions */
	const char *part[5] = { 0 };
	size_t plen[5] = { 0 };
	int np = 0;
	for (;;) {
		size_t len = strcspn(p, "?");
		if (np == 5)
			return fail(err, errlen, "too many parts in ldapurl \"%.64s\"", url);
		part[np] = p;
		plen[np++] = len;
		if (!p[len])
			break;
		p += len + 1;
	}
	if (np > 4 && plen[4] > 0)
		return fail(err, errlen, "ldapurl extensions are not supported");
	if (plen[0] && (rc = pct_decode(o->basedn, sizeof o->basedn, part[0], plen[0], "base DN", err, errlen)) < 0)
		return rc;
	if (np > 1 && plen[1]) {
		size_t first = strcspn(part[1], ",?"); /* only the first attribute, as PostgreSQL */
		if ((rc = pct_decode(o->searchattribute, sizeof o->searchattribute, part[1], first, "attribute", err,
				     errlen)) < 0)
			return rc;
		o->given |= OPT_ATTR;
	}
	if (np > 2 && plen[2]) {
		if (plen[2] == 4 && strncmp(part[2], "base", 4) == 0)
			o->scope = CONFIG_LDAP_SCOPE_BASE;
		else if (plen[2] == 3 && strncmp(part[2], "one", 3) == 0)
			o->scope = CONFIG_LDAP_SCOPE_ONE;
		else if (plen[2] == 3 && strncmp(part[2], "sub", 3) == 0)
			o->scope = CONFIG_LDAP_SCOPE_SUB;
		else
			return fail(err, errlen, "invalid scope in ldapurl \"%.64s\" (base, one or sub)", url);
	}
	if (np > 3 && plen[3]) {
		if ((rc = pct_decode(o->searchfilter, sizeof o->searchfilter, part[3], plen[3], "filter", err, errlen)) <
		    0)
			return rc;
		o->given |= OPT_FILTER;
	}
	o->given |= OPT_SERVER | OPT_SCHEME | (colon ? OPT_PORT : 0) | (o->basedn[0] ? OPT_BASEDN : 0);
	return 0;
}

int config_ldap_set(struct config_ldap *o, const char *name, size_t nlen, const char *value, char *err,
		    size_t errlen)
{
	static const struct {
		const char *name;
		unsigned bit;
		size_t off; /* of the string field, or 0 */
		size_t cap;
	} opts[] = {
		{ "ldapserver", OPT_SERVER, 0, 0 },
		{ "ldapport", OPT_PORT, 0, 0 },
		{ "ldapscheme", OPT_SCHEME, 0, 0 },
		{ "ldaptls", OPT_TLS, 0, 0 },
		{ "ldapurl", OPT_URL, 0, 0 },
		{ "ldapprefix", OPT_PREFIX, offsetof(struct config_ldap, prefix), CONFIG_LDAP_STR_MAX },
		{ "ldapsuffix", OPT_SUFFIX, offsetof(struct config_ldap, suffix), CONFIG_LDAP_STR_MAX },
		{ "ldapbasedn", OPT_BASEDN, offsetof(struct config_ldap, basedn), CONFIG_LDAP_STR_MAX },
		{ "ldapbinddn", OPT_BINDDN, offsetof(struct config_ldap, binddn), CONFIG_LDAP_STR_MAX },
		{ "ldapbindpasswd", OPT_BINDPASSWD, offsetof(struct config_ldap, bindpasswd), CONFIG_LDAP_STR_MAX },
		{ "ldapsearchattribute", OPT_ATTR, offsetof(struct config_ldap, searchattribute), CONFIG_LDAP_ATTR_MAX },
		{ "ldapsearchfilter", OPT_FILTER, offsetof(struct config_ldap, searchfilter), CONFIG_LDAP_STR_MAX },
	};
	size_t i;

	for (i = 0; i < sizeof opts / sizeof opts[0]; i++)
		if (strlen(opts[i].name) == nlen && memcmp(name, opts[i].name, nlen) == 0)
			break;
	if (i == sizeof opts / sizeof opts[0])
		return fail(err, errlen, "unknown LDAP option \"%.*s\"", (int)(nlen > 32 ? 32 : nlen), name);
	name = opts[i].name; /* NUL-terminated from here on */
	/* An ldapurl sets what it holds; an option it set may not be written again, nor twice. */
	if (o->given & opts[i].bit)
		return fail(err, errlen, "LDAP option \"%s\" given twice (or also in ldapurl)", name);
	o->given |= opts[i].bit;
	if (opts[i].off)
		return copy((char *)o + opts[i].off, opts[i].cap, value, strlen(value), name, err, errlen);
	switch (opts[i].bit) {
	case OPT_SERVER:
		return set_server(o, value, err, errlen);
	case OPT_PORT:
		o->port = parse_port(value, strlen(value));
		return o->port < 0 ? fail(err, errlen, "invalid LDAP port number \"%.16s\" (1..65535)", value) : 0;
	case OPT_SCHEME:
		if (strcmp(value, "ldap") != 0 && strcmp(value, "ldaps") != 0)
			return fail(err, errlen, "invalid ldapscheme value \"%.16s\" (ldap or ldaps)", value);
		o->ldaps = strcmp(value, "ldaps") == 0;
		return 0;
	case OPT_TLS:
		o->starttls = strcmp(value, "1") == 0; /* PostgreSQL: 1 is on, anything else off */
		return 0;
	case OPT_URL:
		if (o->given & (OPT_SERVER | OPT_PORT | OPT_SCHEME | OPT_BASEDN | OPT_ATTR | OPT_FILTER))
			return fail(err, errlen, "ldapurl cannot be combined with ldapserver, ldapport, ldapscheme, "
						 "ldapbasedn, ldapsearchattribute or ldapsearchfilter");
		return set_url(o, value, err, errlen);
	}
	return 0;
}

int config_ldap_finish(struct config_ldap *o, char *err, size_t errlen)
{
	if (o->given & (OPT_PREFIX | OPT_SUFFIX)) {
		if (o->given & (OPT_BASEDN | OPT_BINDDN | OPT_BINDPASSWD | OPT_ATTR | OPT_FILTER))
			return fail(err, errlen, "cannot use ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute, "
						 "ldapsearchfilter, or ldapurl together with ldapprefix");
		o->search = false;
	} else if (!(o->given & OPT_BASEDN)) {
		return fail(err, errlen, "authentication method \"ldap\" requires argument \"ldapbasedn\", "
					 "\"ldapprefix\", or \"ldapsuffix\" to be set");
	} else {
		o->search = true;
	}
	if ((o->given & OPT_ATTR) && (o->given & OPT_FILTER))
		return fail(err, errlen, "cannot use ldapsearchattribute together with ldapsearchfilter");
	if (!o->server[0])
		return fail(err, errlen, "authentication method \"ldap\" requires argument \"ldapserver\" (or an "
					 "ldapurl with a host) to be set");
	if (o->ldaps && o->starttls)
		return fail(err, errlen, "ldaptls=1 (StartTLS) cannot be used with ldapscheme ldaps");
	return 0;
}

int config_ldap_parse(const char *s, struct config_ldap *o, char *err, size_t errlen)
{
	char value[CONFIG_LDAP_STR_MAX];
	int rc;

	config_ldap_init(o);
	for (const char *p = s;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		const char *name = p;
		size_t nlen = strcspn(p, "= \t\n\r");
		if (p[nlen] != '=') /* not echoed: it may be a piece of a password */
			return fail(err, errlen, "expected NAME=VALUE, found a word without \"=\"");
		p += nlen + 1;
		size_t n = 0;
		bool quoted = false;
		/* The value: up to a blank outside quotes; "" inside quotes is one quote. */
		while (*p && (quoted || (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r'))) {
			if (*p == '"') {
				if (quoted && p[1] == '"') {
					p++;
				} else {
					quoted = !quoted;
					p++;
					continue;
				}
			}
			if (n + 1 >= sizeof value)
				return fail(err, errlen, "%.*s is longer than %zu bytes", (int)(nlen > 32 ? 32 : nlen), name,
					    sizeof value - 1);
			value[n++] = *p++;
		}
		if (quoted)
			return fail(err, errlen, "unterminated quote in the value of %.*s", (int)(nlen > 32 ? 32 : nlen),
				    name);
		value[n] = '\0';
		if ((rc = config_ldap_set(o, name, nlen, value, err, errlen)) < 0)
			return rc;
	}
	return config_ldap_finish(o, err, errlen);
}
