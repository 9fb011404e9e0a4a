/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The bitmap parts of vimg convert (convert-bitmaps.c).  Each prints one
 * error line on failure. */
#ifndef VIMG_CMD_CONVERT_H
#define VIMG_CMD_CONVERT_H

#include <stdbool.h>

#include <jansson.h>

#include "vimg.h"

struct bitmap;

/* --bitmaps: the consistent persistent bitmaps of SRC to copy (a JSON
 * array as qemu-img info lists them; caller frees with json_decref), or
 * NULL when SRC keeps no bitmaps or one is inconsistent and not
 * SKIP_BROKEN (skipped ones are warned about). */
json_t *convert_bitmaps_check_source(vimg_node *src, bool skip_broken);
/* Add every bitmap of LIST to DST with SRC's content, all or nothing. */
int convert_bitmaps_copy(vimg_node *src, vimg_node *dst, json_t *list);
/* --bitmap NAME: a copy of SRC's bitmap NAME; caller frees with
 * bitmap_free. */
struct bitmap *convert_bitmap_load(vimg_node *src, const char *name);
/* --clear-bitmap: clear SRC's bitmap NAME (SRC open read-write). */
int convert_bitmap_clear(vimg_node *src, const char *name);

#endif
