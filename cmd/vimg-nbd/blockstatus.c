/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BLOCK_STATUS: one status chunk per selected metadata context
 * (base:allocation, qemu:allocation-depth, qemu:dirty-bitmap:NAME),
 * extents merged and capped at NBD_MAX_EXTENTS (one with REQ_ONE), as
 * compact (u32) or extended (u64) descriptors.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "dirty.h"
#include "io.h"
#include "nbd-proto.h"
#include "reply.h"
#include "vector.h"
#include "vimg.h"

DEFINE_VECTOR(uint8_t, byte_vector);


struct bs_ext {
    uint64_t len;
    uint32_t flags;
};
DEFINE_VECTOR(struct bs_ext, bs_vector);

/* Append (LEN, FLAGS), merging with the previous extent. */
static int
bs_add(struct bs_vector *v, uint64_t len, uint32_t flags)
{
    if (v->len && v->ptr[v->len - 1].flags == flags) {
        v->ptr[v->len - 1].len += len;
        return 0;
    }
    return bs_vector_append(v, (struct bs_ext){ len, flags });
}

static bool
bs_full(const struct bs_vector *v, bool one)
{
    return one ? v->len >= 1 : v->len >= NBD_MAX_EXTENTS;
}

/* base:allocation (DEPTH false) or qemu:allocation-depth (true). */
static int
bs_chain(struct node *n, bool depth, uint64_t off, uint64_t end, bool one,
         struct bs_vector *v)
{
    while (off < end && !bs_full(v, one)) {
        struct vimg_extent ext;
        uint32_t f;

        if (node_block_status(n, !depth, off, end - off, &ext) == -1)
            return -1;
        if (depth)
            f = ext.flags & VIMG_EXT_ALLOCATED ? (uint32_t)ext.depth + 1 : 0;
        else
            f = (ext.flags & VIMG_EXT_DATA ? 0 : NBD_STATE_HOLE) |
                (ext.flags & VIMG_EXT_ZERO ? NBD_STATE_ZERO : 0);
        if (bs_add(v, ext.length, f) == -1)
            return -1;
        off += ext.length;
    }
    return 0;
}

static int
bs_bitmap(const struct export_bitmap *eb, uint64_t off, uint64_t end,
          bool one, struct bs_vector *v)
{
    const struct bitmap *bm = eb->bm;
    uint64_t bend;
    int r = 0;

    if (eb->owner)
        dirty_lock(eb->owner);
    bend = end < bitmap_size(bm) ? end : bitmap_size(bm);
    while (off < bend && !bs_full(v, one) && r == 0) {
        bool dirty = bitmap_get(bm, off);
        int64_t next = dirty ? bitmap_next_clean(bm, off, bend)
                             : bitmap_next_dirty(bm, off, bend);
        uint64_t stop = next < 0 ? bend : (uint64_t)next;

        r = bs_add(v, stop - off, dirty ? NBD_STATE_DIRTY : 0);
        off = stop;
    }
    if (eb->owner)
        dirty_unlock(eb->owner);
    if (r == 0 && off < end && !bs_full(v, one))
        r = bs_add(v, end - off, 0);
    return r;
}

/* Encode V as the payload of one status chunk for context ID. */
static int
bs_encode(const struct conn *c, uint32_t id, const struct bs_vector *v,
          struct byte_vector *out)
{
    size_t each = c->extended ? 16 : 8;
    size_t head = c->extended ? 8 : 4;
    uint8_t *p;
    uint32_t be = htobe32(id);

    if (byte_vector_reserve(out, head + v->len * each) == -1)
        return -1;
    p = out->ptr;
    memcpy(p, &be, 4);
    if (c->extended) {
        be = htobe32((uint32_t)v->len);
        memcpy(p + 4, &be, 4);
    }
    p += head;
    for (size_t i = 0; i < v->len; i++, p += each) {
        if (c->extended) {
            uint64_t a = htobe64(v->ptr[i].len), b = htobe64(v->ptr[i].flags);

            memcpy(p, &a, 8);
            memcpy(p + 8, &b, 8);
        } else {
            uint32_t a = htobe32((uint32_t)v->ptr[i].len);
            uint32_t b = htobe32(v->ptr[i].flags);

            memcpy(p, &a, 4);
            memcpy(p + 4, &b, 4);
        }
    }
    out->len = head + v->len * each;
    return 0;
}

int
do_block_status(struct worker *w, const struct req *rq)
{
    struct conn *c = w->c;
    struct export *e = c->exp;
    bool one = rq->flags & NBD_CMD_FLAG_REQ_ONE;
    uint64_t end = rq->offset + rq->len;
    struct byte_vector bufs[2 + EXPORT_MAX_BITMAPS] = { 0 };
    struct chunk ch[2 + EXPORT_MAX_BITMAPS] = { 0 };
    uint16_t type = c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT
                                : NBD_REPLY_TYPE_BLOCK_STATUS;
    size_t n = 0;
    int r = 0;

    for (unsigned id = 0; id < 2 + e->nr_bitmaps && r == 0; id++) {
        struct bs_vector v = { 0 };

        if (id == META_ID_BASE && c->meta_base)
            r = bs_chain(e->node, false, rq->offset, end, one, &v);
        else if (id == META_ID_DEPTH && c->meta_depth)
            r = bs_chain(e->node, true, rq->offset, end, one, &v);
        else if (id >= META_ID_BITMAP0 &&
                 (c->meta_bitmaps & (1ull << (id - META_ID_BITMAP0))))
            r = bs_bitmap(&e->bitmaps[id - META_ID_BITMAP0], rq->offset,
                          end, one, &v);
        else
            continue;
        if (r == 0)
            r = bs_encode(c, id, &v, &bufs[n]);
        if (r == 0)
            ch[n] = (struct chunk){ type, NULL, 0, bufs[n].ptr, bufs[n].len };
        n++;
        bs_vector_reset(&v);
    }
    if (r == -1)
        r = reply_error(c, rq, nbd_errno(errno), vimg_get_error());
    else
        r = reply_chunks(c, rq, ch, n);
    for (size_t i = 0; i < n; i++)
        byte_vector_reset(&bufs[i]);
    return r;
}
