/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Image creation shared by vimg_create() and `vimg create`. */
#ifndef VIMG_CREATE_H
#define VIMG_CREATE_H

#include <jansson.h>

/* Parse OPTIONS (-o syntax, may be NULL) for FORMAT and resolve them:
 * "size" becomes an integer, taken from the backing file when absent.
 * FLAGS: VIMG_CREATE_*.  Returns a new object; caller json_decref()s. */
json_t *create_prepare(const char *format, const char *filename,
                       const char *options, unsigned flags);
/* Create FILENAME in FORMAT from prepared options. */
int create_image(const char *format, const char *filename, json_t *opts);

#endif
