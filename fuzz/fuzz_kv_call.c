/* libFuzzer target for what a client of the virtual kv database controls (src/kv/call.c): the
 * call parser (SQL through libpg_query, then the parse tree walk) and the decoders of bound
 * values. The first byte picks the entry point: 0 kv_call_parse, 1 the text[] literal, 2 the
 * binary text[], 3+ a binary scalar of type oids[mode % 7] (jsonb, interval, text, unknown, json, int4, bool). Besides crashes and leaks, it
 * checks the invariants the front relies on: arguments within bounds, constants inside the
 * call's storage, parameters numbered 1..KV_CALL_MAX_PARAMS, elements within their counts, and
 * a SET or transaction statement with no arguments (a BEGIN's text bounded). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/call.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

static void check_arg(const struct kv_call *c, const struct kv_arg *a)
{
	switch (a->kind) {
	case KV_ARG_NULL:
		break;
	case KV_ARG_CONST:
		check((size_t)a->off + a->len < c->text_len + 1 && c->text[a->off + a->len] == '\0');
		check(strlen(c->text + a->off) == a->len);
		break;
	case KV_ARG_PARAM:
		check(a->param >= 1 && a->param <= c->nparams && c->nparams <= KV_CALL_MAX_PARAMS);
		break;
	default:
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	data++, size--;
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (mode == 0) {
		static struct kv_call call; /* reused, as a session reuses its statements */
		char state[6], err[300];
		int rc = kv_call_parse(s, &call, state, err, sizeof err);
		if (rc == 0 && call.local && call.local != KV_LOCAL_DECLARE) {
			/* no call: a statement answered by the kv database itself (a DECLARE has its call) */
			char begin[KV_CALL_BEGIN_MAX];
			kv_txn_begin_text(&call.chars, begin);
			check(call.nargs == 0 && call.local <= KV_LOCAL_EMPTY);
			check(call.local == KV_LOCAL_TYPE_INFO ? call.type_query >= KV_TYPE_BY_OID && call.type_query <= KV_TYPE_BY_REGTYPE
							 : call.nparams == 0 && call.type_query == 0);
			check(memchr(call.value, '\0', sizeof call.value) != NULL);
			check(memchr(call.name, '\0', sizeof call.name) != NULL);
			check(call.local < KV_LOCAL_SAVEPOINT || call.local > KV_LOCAL_ROLLBACK_TO || call.name[0]);
			check(call.local != KV_LOCAL_FETCH || (call.fetch_dir <= KV_FETCH_RELATIVE && call.fetch_count != INT64_MIN));
			check(call.scroll >= -1 && call.scroll <= 1);
			check(strncmp(begin, "BEGIN", 5) == 0 && memchr(call.column, '\0', sizeof call.column) != NULL);
			check(call.local == KV_LOCAL_BEGIN || !call.txn_start);
			check(call.local != KV_LOCAL_SHOW || call.show <= KV_SHOW_LOCK_TIMEOUT);
			check(call.local != KV_LOCAL_TIMEOUT ||
			      (call.timeout < KV_TIMEOUT_COUNT && (call.timeout_ms <= INT32_MAX || call.timeout_ms == KV_TIMEOUT_RESET)));
		} else if (rc == -E2BIG) {
			/* several statements: each span inside the text */
			struct kv_span sp[KV_CALL_MAX_STMTS];
			int n = kv_call_split(s, sp, KV_CALL_MAX_STMTS, state, err, sizeof err);
			check(n >= 2 || n == -EINVAL || n == -ENOMEM);
			size_t len = strlen(s);
			for (int i = 0; i < n; i++)
				check(sp[i].off <= len && sp[i].len <= len - sp[i].off &&
				      (i == 0 || sp[i].off >= sp[i - 1].off + sp[i - 1].len));
		} else if (rc == 0) {
			check(call.nargs >= 1 && call.nargs <= KV_CALL_MAX_ARGS); /* kv.flush(ns): 1 */
			for (int i = 0; i < call.nargs; i++) {
				const struct kv_arg *a = &call.args[i];
				if (a->kind == KV_ARG_ARRAY) {
					check(kv_op_array_arg(call.op, i) && a->first + a->n <= call.nelems);
					for (uint32_t e = 0; e < a->n; e++)
						check_arg(&call, &call.elems[a->first + e]);
				} else {
					check_arg(&call, a);
				}
			}
		} else {
			check(rc == -EINVAL || rc == -ENOMEM);
			check(rc == -ENOMEM || (strlen(state) == 5 && err[0] != '\0'));
		}
	} else if (mode == 1 || mode == 2) {
		struct kv_elem el[64];
		char *scratch = malloc(size + 1);
		if (scratch) {
			int n = mode == 1 ? kv_text_array_parse(s, size, scratch, el, 64)
					  : kv_binary_array_parse(data, size, el, 64);
			check(n >= 0 || n == -E2BIG || n == -EINVAL);
			for (int i = 0; i < n; i++)
				if (el[i].p)
					check(memchr(el[i].p, '\0', el[i].len) == NULL);
			free(scratch);
		}
	} else {
		static const uint32_t oids[] = { KV_OID_JSONB, KV_OID_INTERVAL, KV_OID_TEXT, 0, 114, 23, KV_OID_BOOL };
		char out[256];
		long n = kv_binary_scalar_text(oids[mode % 7], data, size, out, sizeof out);
		check((n >= 0 && n <= (long)sizeof out) || n == -E2BIG || n == -EINVAL);
	}
	free(s);
	return 0;
}
