/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 L1/L2 tables: the metadata cache (shared with refcount blocks),
 * L2 entry accessors, lookup and classification, and L2/L1 write-back.
 *
 * The cache holds whole clusters in on-disk byte order; entries are
 * converted only by qcow2_l2_read_entry/qcow2_l2_write_entry.  A pointer
 * returned by the cache is valid until the next call into the same
 * cache.  Write-back order: a dirty L2 table is written only after the
 * refcount blocks and the data written so far are durable
 * (qcow2_flush_refcounts_locked); the L1 table only after the L2 tables
 * are durable.  All functions need s->lock.
 */
#include <endian.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "io.h"
#include "qcow2.h"

int
qcow2_cache_init(struct qcow2_state *s, struct qcow2_cache *c, size_t n)
{
    (void)s;
    c->e = calloc(n, sizeof *c->e);
    if (!c->e) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    c->n = n;
    return 0;
}

void
qcow2_cache_free(struct qcow2_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->e[i].buf);
    free(c->e);
    c->e = NULL;
    c->n = 0;
}

/* Write one dirty entry back, honouring the dependency on refcounts. */
static int
writeback(struct qcow2_state *s, struct qcow2_cache *c,
          struct qcow2_cache_entry *e)
{
    if (!e->dirty)
        return 0;
    if (c == &s->l2_cache && qcow2_flush_refcounts_locked(s) == -1)
        return -1;
    if (node_pwrite(s->node->file, e->buf, s->cluster_size, e->offset,
                    0) == -1)
        return -1;
    e->dirty = false;
    return 0;
}

/* Find OFFSET in the cache, or a slot to load it into (written back). */
static struct qcow2_cache_entry *
cache_slot(struct qcow2_state *s, struct qcow2_cache *c, uint64_t offset,
           bool *hit)
{
    struct qcow2_cache_entry *victim = NULL;

    if (c->e[c->last].offset == offset) {
        *hit = true;
        c->e[c->last].lru = ++c->tick;
        return &c->e[c->last];
    }
    for (size_t i = 0; i < c->n; i++) {
        struct qcow2_cache_entry *e = &c->e[i];
        if (e->offset == offset) {
            *hit = true;
            e->lru = ++c->tick;
            c->last = i;
            return e;
        }
        if (!victim || e->offset == 0 ||
            (victim->offset != 0 && e->lru < victim->lru))
            victim = e;
    }
    *hit = false;
    if (victim->offset && writeback(s, c, victim) == -1)
        return NULL;
    if (!victim->buf) {
        victim->buf = malloc(s->cluster_size);
        if (!victim->buf) {
            vimg_error(errno, "malloc: %m");
            return NULL;
        }
    }
    victim->offset = 0;
    victim->dirty = false;
    victim->lru = ++c->tick;
    c->last = victim - c->e;
    return victim;
}

uint8_t *
qcow2_cache_get_locked(struct qcow2_state *s, struct qcow2_cache *c,
                       uint64_t offset, bool fresh)
{
    struct qcow2_cache_entry *e;
    bool hit;

    if (offset == 0 || !IS_ALIGNED(offset, s->cluster_size)) {
        vimg_error(EIO, "corrupt image: metadata offset 0x%" PRIx64
                   " is not cluster-aligned", offset);
        return NULL;
    }
    e = cache_slot(s, c, offset, &hit);
    if (!e)
        return NULL;
    if (fresh) {
        memset(e->buf, 0, s->cluster_size);
        e->dirty = true;
    } else if (!hit) {
        /* Tables not yet written are always in the cache, so one that
         * must be read from past the end of the file is corruption. */
        if (offset + s->cluster_size > s->node->file->size) {
            vimg_error(EIO, "corrupt image: metadata at 0x%" PRIx64
                       " is beyond the end of the file", offset);
            return NULL;
        }
        if (node_pread(s->node->file, e->buf, s->cluster_size, offset) ==
            -1)
            return NULL;
    }
    e->offset = offset;
    return e->buf;
}

void
qcow2_cache_mark_dirty(struct qcow2_cache *c, uint64_t offset)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].offset == offset) {
            c->e[i].dirty = true;
            return;
        }
}

int
qcow2_cache_writeback_locked(struct qcow2_state *s, struct qcow2_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].offset && c->e[i].dirty &&
            writeback(s, c, &c->e[i]) == -1)
            return -1;
    return 0;
}

bool
qcow2_cache_is_dirty(const struct qcow2_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].offset && c->e[i].dirty)
            return true;
    return false;
}

void
qcow2_cache_drop(struct qcow2_cache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        c->e[i].offset = 0;
        c->e[i].dirty = false;
    }
}

uint8_t *
qcow2_l2_get_locked(struct qcow2_state *s, uint64_t offset)
{
    return qcow2_cache_get_locked(s, &s->l2_cache, offset, false);
}

uint8_t *
qcow2_l2_new_locked(struct qcow2_state *s, uint64_t offset)
{
    return qcow2_cache_get_locked(s, &s->l2_cache, offset, true);
}

void
qcow2_l2_mark_dirty_locked(struct qcow2_state *s, uint64_t offset)
{
    qcow2_cache_mark_dirty(&s->l2_cache, offset);
}

void
qcow2_l2_forget_locked(struct qcow2_state *s, uint64_t offset)
{
    struct qcow2_cache *c = &s->l2_cache;

    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].offset == offset) {
            c->e[i].offset = 0;
            c->e[i].dirty = false;
        }
}

void
qcow2_l2_read_entry(const struct qcow2_state *s, const uint8_t *tbl,
                    uint32_t idx, struct qcow2_l2e *e)
{
    uint64_t v[2] = { 0, 0 };

    memcpy(v, tbl + (size_t)idx * s->l2_entry_size, s->l2_entry_size);
    e->entry = be64toh(v[0]);
    e->bitmap = s->extl2 ? be64toh(v[1]) : 0;
}

void
qcow2_l2_write_entry(const struct qcow2_state *s, uint8_t *tbl,
                     uint32_t idx, const struct qcow2_l2e *e)
{
    uint64_t v[2] = { htobe64(e->entry), htobe64(e->bitmap) };

    memcpy(tbl + (size_t)idx * s->l2_entry_size, v, s->l2_entry_size);
}

/* Refuse a standard L2 entry whose data cluster cannot be real: not
 * aligned (it would overlap metadata such as the header) or, in the
 * image file, starting past its end.  Reading zeroes there would hide
 * corruption. */
static int
check_data_entry(struct qcow2_state *s, const struct qcow2_l2e *e)
{
    uint64_t off = e->entry & QCOW2_OFFSET_MASK;

    if (!off || e->entry & QCOW2_OFLAG_COMPRESSED)
        return 0;
    if (off & (s->cluster_size - 1)) {
        vimg_error(EIO, "corrupt image: data cluster at 0x%" PRIx64
                   " is not cluster-aligned", off);
        return -1;
    }
    if (!s->data_file_name && off >= s->node->file->size &&
        !(e->entry & QCOW2_OFLAG_ZERO) &&
        (!s->extl2 || (e->bitmap & 0xffffffffu))) {
        vimg_error(EIO, "corrupt image: data cluster at 0x%" PRIx64
                   " is beyond the end of the file", off);
        return -1;
    }
    return 0;
}

int
qcow2_lookup_locked(struct qcow2_state *s, uint64_t voff,
                    struct qcow2_l2e *e)
{
    uint64_t cl = voff >> s->cluster_bits;
    uint64_t l1i = cl / s->l2_entries, l2off;
    const uint8_t *tbl;

    e->entry = e->bitmap = 0;
    if (l1i >= s->l1_size)
        return 0;
    l2off = s->l1[l1i] & QCOW2_OFFSET_MASK;
    if (!l2off)
        return 0;
    tbl = qcow2_l2_get_locked(s, l2off);
    if (!tbl)
        return -1;
    qcow2_l2_read_entry(s, tbl, cl % s->l2_entries, e);
    return check_data_entry(s, e);
}

enum qcow2_kind
qcow2_classify(const struct qcow2_state *s, const struct qcow2_l2e *e,
               unsigned sc)
{
    uint64_t off = e->entry & QCOW2_OFFSET_MASK;
    bool has_host = off != 0 || (s->data_file_name &&
                                 (e->entry & QCOW2_OFLAG_COPIED));

    if (e->entry & QCOW2_OFLAG_COMPRESSED)
        return Q_COMPRESSED;
    if (s->extl2) {
        if (e->bitmap & (1ull << sc))
            return Q_NORMAL;
        if (e->bitmap & (1ull << (32 + sc)))
            return has_host ? Q_ZERO_ALLOC : Q_ZERO;
        return Q_UNALLOC;
    }
    if (e->entry & QCOW2_OFLAG_ZERO)
        return has_host ? Q_ZERO_ALLOC : Q_ZERO;
    return has_host ? Q_NORMAL : Q_UNALLOC;
}

void
qcow2_compressed_range(const struct qcow2_state *s, uint64_t entry,
                       uint64_t *off, uint64_t *len)
{
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t nsec = (entry >> x) & ((1ull << (s->cluster_bits - 8)) - 1);

    *off = entry & ((1ull << x) - 1);
    *len = (*off & ~511ull) + (nsec + 1) * 512 - *off;
}

int
qcow2_write_l1_locked(struct qcow2_state *s)
{
    size_t bytes = (size_t)s->l1_size * 8;
    uint64_t *be;
    int r;

    if (!bytes)
        return 0;
    be = malloc(bytes);
    if (!be) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    for (uint32_t i = 0; i < s->l1_size; i++)
        be[i] = htobe64(s->l1[i]);
    r = node_pwrite(s->node->file, be, bytes, s->l1_offset, 0);
    free(be);
    return r;
}

int
qcow2_flush_l2_locked(struct qcow2_state *s)
{
    bool any = qcow2_cache_is_dirty(&s->l2_cache);

    if (any) {
        if (qcow2_cache_writeback_locked(s, &s->l2_cache) == -1)
            return -1;
    }
    if (s->l1_dirty) {
        if (node_flush(s->node->file) == -1)
            return -1;
        if (qcow2_write_l1_locked(s) == -1)
            return -1;
        s->l1_dirty = false;
        any = true;
    }
    if (any && node_flush(s->node->file) == -1)
        return -1;
    return 0;
}
