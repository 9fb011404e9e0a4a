/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Option trees (jansson objects, blockdev-add shape): building them from
 * filenames, dotted strings and JSON, and typed getters. */
#ifndef VIMG_OPTIONS_H
#define VIMG_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

/* Parse "a=1,b.c=x,,y" into a nested object; caller json_decref()s.  A
 * leading bare value is stored under IMPLIED_KEY when it is non-NULL. */
json_t *opts_parse_dotted(const char *str, const char *implied_key);
/* Parse JSON text that must be an object; caller json_decref()s. */
json_t *opts_parse_json(const char *text);
/* {"driver": FORMAT, "file": {"driver": "file", "filename": F}}, or the
 * parsed "json:{...}" form; FORMAT may be NULL (probe).  Caller frees. */
json_t *opts_from_filename(const char *filename, const char *format);

/* String value of KEY or NULL (borrowed). */
const char *opts_get_str(json_t *opts, const char *key);
/* on/off/true/false/yes/no or a JSON boolean; DFLT when absent. */
int opts_get_bool(json_t *opts, const char *key, bool dflt, bool *out);
/* A size (JSON integer or size string); DFLT when absent. */
int opts_get_size(json_t *opts, const char *key, uint64_t dflt,
                  uint64_t *out);
/* Fail naming the first key of OPTS not in the NULL-ended ALLOWED. */
int opts_check_keys(json_t *opts, const char *const *allowed,
                    const char *what);

#endif
