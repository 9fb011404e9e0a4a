/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: the option-string parsers of lib/options.c.  The
 * input (NUL-terminated) goes through opts_parse_dotted, with and
 * without an implied key, and through opts_parse_json; each tree that
 * parses is then read with the typed getters.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
probe(json_t *o)
{
    static const char *const keys[] = { "driver", "file", "size",
                                        "read-only", NULL };
    static const char *const allowed[] = { "driver", "file", NULL };
    uint64_t sz;
    bool b;

    if (!o)
        return;
    for (int i = 0; keys[i]; i++) {
        opts_get_str(o, keys[i]);
        opts_get_bool(o, keys[i], false, &b);
        opts_get_size(o, keys[i], 0, &sz);
    }
    opts_check_keys(o, allowed, "fuzz");
    json_decref(o);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;

    if (size > 65536)
        return 0;
    s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    probe(opts_parse_dotted(s, NULL));
    probe(opts_parse_dotted(s, "filename"));
    probe(opts_parse_json(s));
    probe(opts_from_filename(s, "qcow2"));
    free(s);
    return 0;
}
