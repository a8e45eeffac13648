/* util_dl_load (dl.h). */
#include "util/dl.h"

#include <dlfcn.h>
#include <stdio.h>

int util_dl_load(const char *library, const char *const *names, void **syms, size_t n, char *err, size_t cap)
{
	void *h = dlopen(library, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(err, cap, "cannot load %s: %s", library, dlerror());
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (!(syms[i] = dlsym(h, names[i]))) {
			snprintf(err, cap, "cannot load %s: no symbol %s", library, names[i]);
			return -1; /* (h stays open: harmless, and a retry would fail the same way) */
		}
	}
	return 0;
}
