
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * What a zone keeps on disk, record by record, and the merge of a snapshot
 * with the journal written after it.  Nothing here uses a pool or a log:
 * the merge runs in a thread of a thread pool when the journal is
 * compacted, and in the master when a zone is created.
 *
 * A record is one credential, integers little-endian:
 *
 *   name_len:u16 name  access_len:u32 access  refresh_len:u32 refresh
 *   issued:i64  expires:i64  generation:u64  seed:16-byte digest
 *   session:u8  [ created:i64  last:i64  subject:16 bytes
 *                 kept_len:u16 kept ]
 *
 * A user's session has session 1 and its handle's digest for a name.
 *
 * The snapshot's content ("TRS2", of 0.9, has no sequence numbers and
 * no ops, "TRS1" neither, nor a session byte; both are still read):
 *
 *   "TRS3"  floor:u64  count:u32  spent:u32  spent x 16-byte digests
 *   count x { seq:u64  op:u8  put: record | gone: 16 bytes }
 *
 * The journal is a file of frames appended one after the other, each
 * sealed on its own (AES-256-GCM under a key of its own, HMAC-SHA256 of
 * the state key and the frame's salt, with "TRJ1" and the zone's name as
 * additional data) so that a torn last frame loses only itself:
 *
 *   len:u32  salt:16  nonce | ciphertext | tag
 *
 * and a frame's content is what one change did to the zone:
 *
 *   seq:u64  ops:u16  ops x { op:u8  put: record | gone, spent: 16 bytes }
 *
 * Every record of a frame has the frame's sequence number, taken under the
 * zone's mutex when the frame is made, so the newest record of a
 * credential is the one with the highest number, whatever the order in
 * which workers appended their frames: a worker may append a frame made
 * before another worker's frame, which a compaction already merged.  So
 * the merge keeps the numbers, and "gone" records for an hour, and never
 * drops a frame for being older than the snapshot; except that a snapshot
 * copied from the zone (ngx_http_tokenrefresh_state_save()) holds all
 * that frames numbered up to its floor said, as they were made under the
 * mutex before the copy: those frames are skipped.  The same sealed frame
 * is what the fleet will keep in Redis.
 */


#include "ngx_http_tokenrefresh_module.h"


/* how long a "gone" record is kept: longer than any frame is in flight */
#define NGX_HTTP_TOKENREFRESH_GONE_KEPT  3600


typedef struct {
    uint64_t                          seq;
    size_t                            ord;
    u_char                           *name;
    size_t                            name_len;
    u_char                           *rec;
    size_t                            rec_len;
    int64_t                           created;
    int64_t                           last;
    unsigned                          session:1;
    unsigned                          op:2;
    unsigned                          legacy:1;    /* no session byte */
} ngx_http_tokenrefresh_entry_t;


typedef struct {
    uint64_t                          seq;
    size_t                            ord;
    u_char                           *digest;
} ngx_http_tokenrefresh_spent_entry_t;


typedef struct {
    ngx_http_tokenrefresh_entry_t    *entries;
    size_t                            nentries;
    size_t                            nalloc;
    ngx_http_tokenrefresh_spent_entry_t  *spent;
    size_t                            nspent;
    size_t                            nspalloc;
    size_t                            ord;
} ngx_http_tokenrefresh_merger_t;


static ngx_int_t ngx_http_tokenrefresh_merge_snapshot(
    ngx_http_tokenrefresh_merge_t *m, ngx_http_tokenrefresh_merger_t *mg,
    uint64_t *seq);
static ngx_int_t ngx_http_tokenrefresh_merge_journal(
    ngx_http_tokenrefresh_merge_t *m, ngx_http_tokenrefresh_merger_t *mg,
    ngx_uint_t n, u_char *plain, uint64_t snapshot);
static ngx_int_t ngx_http_tokenrefresh_merge_frame(
    ngx_http_tokenrefresh_merge_t *m, ngx_http_tokenrefresh_merger_t *mg,
    ngx_str_t *plain, uint64_t snapshot);
static ngx_int_t ngx_http_tokenrefresh_add_entry(
    ngx_http_tokenrefresh_merger_t *mg, ngx_http_tokenrefresh_entry_t *e);
static ngx_int_t ngx_http_tokenrefresh_add_spent(
    ngx_http_tokenrefresh_merger_t *mg, uint64_t seq, u_char *digest);
static int ngx_libc_cdecl ngx_http_tokenrefresh_entry_cmp(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_http_tokenrefresh_recent_cmp(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_http_tokenrefresh_spent_cmp(const void *one,
    const void *two);


size_t
ngx_http_tokenrefresh_record_len(ngx_http_tokenrefresh_node_t *tn)
{
    size_t  len;

    len = 2 + tn->len + 4 + tn->access_len + 4 + tn->refresh_len + 24
          + NGX_HTTP_TOKENREFRESH_DIGEST_LEN + 1;

    if (tn->session) {
        len += 16 + NGX_HTTP_TOKENREFRESH_DIGEST_LEN + 2
               + tn->session->kept_len;
    }

    return len;
}


/* called with the zone's mutex held */

u_char *
ngx_http_tokenrefresh_record_write(u_char *p,
    ngx_http_tokenrefresh_node_t *tn)
{
    ngx_http_tokenrefresh_session_t  *ss;

    p = ngx_http_tokenrefresh_put(p, tn->len, 2);
    p = ngx_cpymem(p, tn->name, tn->len);
    p = ngx_http_tokenrefresh_put(p, tn->access_len, 4);
    p = ngx_cpymem(p, tn->access, tn->access_len);
    p = ngx_http_tokenrefresh_put(p, tn->refresh_len, 4);
    p = ngx_cpymem(p, tn->refresh, tn->refresh_len);
    p = ngx_http_tokenrefresh_put(p, (uint64_t) tn->issued, 8);
    p = ngx_http_tokenrefresh_put(p, (uint64_t) tn->expires, 8);
    p = ngx_http_tokenrefresh_put(p, tn->generation, 8);
    p = ngx_cpymem(p, tn->seed, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);

    ss = tn->session;

    if (ss == NULL) {
        *p++ = 0;
        return p;
    }

    *p++ = 1;
    p = ngx_http_tokenrefresh_put(p, (uint64_t) ss->created, 8);
    p = ngx_http_tokenrefresh_put(p, (uint64_t) ss->last, 8);
    p = ngx_cpymem(p, ss->subject, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    p = ngx_http_tokenrefresh_put(p, ss->kept_len, 2);
    p = ngx_cpymem(p, ss->kept, ss->kept_len);

    return p;
}


/*
 * Checks one record and says where it is; legacy: a "TRS1" record,
 * without the session byte.
 */

ngx_int_t
ngx_http_tokenrefresh_record_scan(ngx_http_tokenrefresh_reader_t *rd,
    size_t max_token_size, ngx_uint_t legacy,
    ngx_http_tokenrefresh_scan_t *rec)
{
    uint64_t   v, kind;
    ngx_str_t  s;

    ngx_memzero(rec, sizeof(ngx_http_tokenrefresh_scan_t));

    rec->data = rd->pos;

    if (ngx_http_tokenrefresh_get_str(rd, &rec->name, 2,
                                      NGX_HTTP_TOKENREFRESH_MAX_NAME)
           != NGX_OK
        || rec->name.len == 0
        || ngx_http_tokenrefresh_get_str(rd, &rec->access, 4, max_token_size)
           != NGX_OK
        || ngx_http_tokenrefresh_get_str(rd, &rec->refresh, 4,
                                         max_token_size)
           != NGX_OK
        || ngx_http_tokenrefresh_get(rd, &v, 8) != NGX_OK
        || ngx_http_tokenrefresh_get(rd, &v, 8) != NGX_OK
        || ngx_http_tokenrefresh_get(rd, &v, 8) != NGX_OK
        || ngx_http_tokenrefresh_get_str(rd, &s, 0,
                                         NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!legacy) {
        if (ngx_http_tokenrefresh_get(rd, &kind, 1) != NGX_OK || kind > 1) {
            return NGX_ERROR;
        }

        if (kind == 1) {
            rec->session = 1;

            if (rec->name.len != NGX_HTTP_TOKENREFRESH_DIGEST_LEN
                || ngx_http_tokenrefresh_get(rd, &v, 8) != NGX_OK)
            {
                return NGX_ERROR;
            }

            rec->created = (int64_t) v;

            if (ngx_http_tokenrefresh_get(rd, &v, 8) != NGX_OK
                || ngx_http_tokenrefresh_get_str(rd, &s, 0,
                                              NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
                   != NGX_OK
                || ngx_http_tokenrefresh_get_str(rd, &s, 2, 65535) != NGX_OK)
            {
                return NGX_ERROR;
            }

            rec->last = (int64_t) v;
        }
    }

    rec->len = rd->pos - rec->data;

    return NGX_OK;
}


/*
 * The state a snapshot and the journals after it describe, as a "TRS3"
 * content: the newest record of each credential unless it is gone, no
 * session that has expired meanwhile, the named credentials first and
 * then the sessions most recently used first (a zone that is too small
 * for all of them keeps those), and the last spent digests.
 */

ngx_int_t
ngx_http_tokenrefresh_merge(ngx_http_tokenrefresh_merge_t *m)
{
    u_char                               *p, *plain;
    size_t                                i, j, len, total, count, keep,
                                          ngone;
    uint64_t                              seq;
    ngx_int_t                             rc;
    ngx_uint_t                            n;
    ngx_http_tokenrefresh_entry_t        *e, *last;
    ngx_http_tokenrefresh_entry_t       **out, **gone;
    ngx_http_tokenrefresh_merger_t        mg;

    ngx_memzero(&mg, sizeof(ngx_http_tokenrefresh_merger_t));
    ngx_str_null(&m->out);
    out = NULL;
    plain = NULL;
    seq = 0;
    rc = NGX_ERROR;
    m->failed = NULL;

    if (m->snapshot.len
        && ngx_http_tokenrefresh_merge_snapshot(m, &mg, &seq) != NGX_OK)
    {
        m->failed = m->failed ? m->failed : "the snapshot does not parse";
        goto done;
    }

    m->floor = seq;
    m->seq = ngx_max(m->seq, seq);

    /* every frame's content is shorter than the frame */

    total = 0;

    for (n = 0; n < 2; n++) {
        total += m->journal[n].len;
    }

    plain = malloc(total + 1);
    if (plain == NULL) {
        goto done;
    }

    p = plain;

    for (n = 0; n < 2; n++) {
        if (ngx_http_tokenrefresh_merge_journal(m, &mg, n, p, seq)
            != NGX_OK)
        {
            goto done;
        }

        p += m->journal[n].len;
    }

    if (mg.nentries) {
        ngx_qsort(mg.entries, mg.nentries,
                  sizeof(ngx_http_tokenrefresh_entry_t),
                  ngx_http_tokenrefresh_entry_cmp);
    }

    out = malloc(2 * (mg.nentries + 1)
                 * sizeof(ngx_http_tokenrefresh_entry_t *));
    if (out == NULL) {
        goto done;
    }

    gone = out + mg.nentries + 1;
    ngone = 0;

    /* the last of each run of one name is the newest */

    count = 0;
    len = 4 + 8 + 4 + 4;

    for (i = 0; i < mg.nentries; i++) {
        last = &mg.entries[i];

        if (i + 1 < mg.nentries) {
            e = &mg.entries[i + 1];

            if (e->session == last->session
                && e->name_len == last->name_len
                && ngx_memcmp(e->name, last->name, e->name_len) == 0)
            {
                continue;
            }
        }

        if (last->op != NGX_HTTP_TOKENREFRESH_OP_PUT) {
            if ((int64_t) (last->seq >> 20) + NGX_HTTP_TOKENREFRESH_GONE_KEPT
                > m->now / 1000)
            {
                gone[ngone++] = last;
                len += 8 + 1 + NGX_HTTP_TOKENREFRESH_DIGEST_LEN;
            }

            continue;
        }

        if (last->session
            && (m->now - last->created >= m->lifetime
                || m->now - last->last >= m->idle))
        {
            m->expired++;
            continue;
        }

        out[count++] = last;
        len += 8 + 1 + last->rec_len + last->legacy;
    }

    /* the named credentials sort first: session is 0 for them */

    for (j = 0; j < count && !out[j]->session; j++) { /* void */ }

    if (count - j > 1) {
        ngx_qsort(&out[j], count - j, sizeof(ngx_http_tokenrefresh_entry_t *),
                  ngx_http_tokenrefresh_recent_cmp);
    }

    if (mg.nspent > 1) {
        ngx_qsort(mg.spent, mg.nspent,
                  sizeof(ngx_http_tokenrefresh_spent_entry_t),
                  ngx_http_tokenrefresh_spent_cmp);
    }

    keep = ngx_min(mg.nspent, NGX_HTTP_TOKENREFRESH_SPENT);
    len += keep * NGX_HTTP_TOKENREFRESH_DIGEST_LEN;

    m->out.data = malloc(len);
    if (m->out.data == NULL) {
        goto done;
    }

    p = ngx_cpymem(m->out.data, NGX_HTTP_TOKENREFRESH_CONTENT, 4);
    p = ngx_http_tokenrefresh_put(p, m->floor, 8);
    p = ngx_http_tokenrefresh_put(p, count + ngone, 4);
    p = ngx_http_tokenrefresh_put(p, keep, 4);

    for (i = mg.nspent - keep; i < mg.nspent; i++) {
        p = ngx_cpymem(p, mg.spent[i].digest,
                       NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    for (i = 0; i < count; i++) {
        p = ngx_http_tokenrefresh_put(p, out[i]->seq, 8);
        *p++ = NGX_HTTP_TOKENREFRESH_OP_PUT;
        p = ngx_cpymem(p, out[i]->rec, out[i]->rec_len);

        if (out[i]->legacy) {
            *p++ = 0;
        }
    }

    for (i = 0; i < ngone; i++) {
        p = ngx_http_tokenrefresh_put(p, gone[i]->seq, 8);
        *p++ = NGX_HTTP_TOKENREFRESH_OP_GONE;
        p = ngx_cpymem(p, gone[i]->name, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    m->out.len = p - m->out.data;
    m->count = count;
    m->sessions = count - j;
    rc = NGX_OK;

done:

    if (plain) {
        ngx_explicit_memzero(plain, total);
        free(plain);
    }

    free(out);
    free(mg.entries);
    free(mg.spent);

    if (rc != NGX_OK && m->out.data) {
        ngx_explicit_memzero(m->out.data, m->out.len);
        free(m->out.data);
        ngx_str_null(&m->out);
    }

    return rc;
}


void
ngx_http_tokenrefresh_merge_free(ngx_http_tokenrefresh_merge_t *m)
{
    if (m->out.data) {
        ngx_explicit_memzero(m->out.data, m->out.len);
        free(m->out.data);
        ngx_str_null(&m->out);
    }
}


static ngx_int_t
ngx_http_tokenrefresh_merge_snapshot(ngx_http_tokenrefresh_merge_t *m,
    ngx_http_tokenrefresh_merger_t *mg, uint64_t *seq)
{
    uint64_t                        count, spent, i, op;
    ngx_str_t                       magic, digest;
    ngx_uint_t                      legacy, ops;
    ngx_http_tokenrefresh_entry_t   e;
    ngx_http_tokenrefresh_reader_t  rd;
    ngx_http_tokenrefresh_scan_t  rec;

    rd.pos = m->snapshot.data;
    rd.last = m->snapshot.data + m->snapshot.len;

    if (ngx_http_tokenrefresh_get_str(&rd, &magic, 0, 4) != NGX_OK) {
        return NGX_ERROR;
    }

    *seq = 0;
    legacy = 0;
    ops = 0;

    if (ngx_memcmp(magic.data, NGX_HTTP_TOKENREFRESH_CONTENT, 4) == 0) {
        if (ngx_http_tokenrefresh_get(&rd, seq, 8) != NGX_OK) {
            return NGX_ERROR;
        }

        ops = 1;

    } else if (ngx_memcmp(magic.data, "TRS1", 4) == 0) {
        legacy = 1;

    } else if (ngx_memcmp(magic.data, "TRS2", 4) != 0) {
        return NGX_ERROR;
    }

    if (ngx_http_tokenrefresh_get(&rd, &count, 4) != NGX_OK
        || ngx_http_tokenrefresh_get(&rd, &spent, 4) != NGX_OK
        || spent > NGX_HTTP_TOKENREFRESH_SPENT)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < spent; i++) {
        if (ngx_http_tokenrefresh_get_str(&rd, &digest, 0,
                                          NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
               != NGX_OK
            || ngx_http_tokenrefresh_add_spent(mg, *seq, digest.data)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < count; i++) {
        ngx_memzero(&e, sizeof(ngx_http_tokenrefresh_entry_t));
        e.seq = *seq;
        e.op = NGX_HTTP_TOKENREFRESH_OP_PUT;
        e.legacy = legacy;

        if (ops) {
            if (ngx_http_tokenrefresh_get(&rd, &e.seq, 8) != NGX_OK
                || ngx_http_tokenrefresh_get(&rd, &op, 1) != NGX_OK
                || (op != NGX_HTTP_TOKENREFRESH_OP_PUT
                    && op != NGX_HTTP_TOKENREFRESH_OP_GONE))
            {
                return NGX_ERROR;
            }

            e.op = op;
        }

        if (e.op == NGX_HTTP_TOKENREFRESH_OP_GONE) {
            if (ngx_http_tokenrefresh_get_str(&rd, &digest, 0,
                                              NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            e.name = digest.data;
            e.name_len = digest.len;
            e.session = 1;

        } else {
            if (ngx_http_tokenrefresh_record_scan(&rd, m->max_token_size,
                                                  legacy, &rec)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            e.name = rec.name.data;
            e.name_len = rec.name.len;
            e.rec = rec.data;
            e.rec_len = rec.len;
            e.created = rec.created;
            e.last = rec.last;
            e.session = rec.session;
        }

        if (e.seq > m->seq) {
            m->seq = e.seq;
        }

        m->held += (e.op == NGX_HTTP_TOKENREFRESH_OP_PUT);

        if (ngx_http_tokenrefresh_add_entry(mg, &e) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return (rd.pos == rd.last) ? NGX_OK : NGX_ERROR;
}


/*
 * A torn frame at the end (the machine stopped during an append) is only
 * left out, and m->good[n] says where the good frames end; a bad frame
 * before it fails the whole merge.
 */

static ngx_int_t
ngx_http_tokenrefresh_merge_journal(ngx_http_tokenrefresh_merge_t *m,
    ngx_http_tokenrefresh_merger_t *mg, ngx_uint_t n, u_char *plain,
    uint64_t snapshot)
{
    size_t                          len;
    ngx_int_t                       rc;
    ngx_str_t                       frame, content;
    ngx_http_tokenrefresh_reader_t  rd;

    rd.pos = m->journal[n].data;
    rd.last = rd.pos + m->journal[n].len;

    m->good[n] = 0;

    while (rd.pos < rd.last) {

        if (rd.last - rd.pos < 4) {
            return NGX_OK;
        }

        len = rd.pos[0] | rd.pos[1] << 8 | rd.pos[2] << 16
              | (size_t) rd.pos[3] << 24;

        if (len > (size_t) (rd.last - rd.pos) - 4) {
            return NGX_OK;
        }

        frame.data = rd.pos + 4;
        frame.len = len;
        content.data = plain;

        rc = ngx_http_tokenrefresh_open_frame(m->key, &m->aad, &frame,
                                              &content);

        if (rc == NGX_DECLINED && m->old_key) {
            rc = ngx_http_tokenrefresh_open_frame(m->old_key, &m->aad,
                                                  &frame, &content);
        }

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc != NGX_OK) {
            if (frame.data + frame.len == rd.last) {
                return NGX_OK;
            }

            m->failed = "a frame of the journal is corrupt, or sealed with "
                        "another key or for another zone";
            return NGX_ERROR;
        }

        if (ngx_http_tokenrefresh_merge_frame(m, mg, &content, snapshot)
            != NGX_OK)
        {
            m->failed = m->failed ? m->failed
                                  : "a frame of the journal does not parse";
            return NGX_ERROR;
        }

        plain += content.len;
        rd.pos = frame.data + frame.len;
        m->good[n] = rd.pos - m->journal[n].data;
        m->frames++;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_merge_frame(ngx_http_tokenrefresh_merge_t *m,
    ngx_http_tokenrefresh_merger_t *mg, ngx_str_t *plain, uint64_t snapshot)
{
    uint64_t                        seq, ops, op, i;
    ngx_str_t                       digest;
    ngx_http_tokenrefresh_entry_t   e;
    ngx_http_tokenrefresh_reader_t  rd;
    ngx_http_tokenrefresh_scan_t  rec;

    rd.pos = plain->data;
    rd.last = plain->data + plain->len;

    if (ngx_http_tokenrefresh_get(&rd, &seq, 8) != NGX_OK
        || ngx_http_tokenrefresh_get(&rd, &ops, 2) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (seq > m->seq) {
        m->seq = seq;
    }

    for (i = 0; i < ops; i++) {
        if (ngx_http_tokenrefresh_get(&rd, &op, 1) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_memzero(&e, sizeof(ngx_http_tokenrefresh_entry_t));
        e.seq = seq;
        e.op = op;

        switch (op) {

        case NGX_HTTP_TOKENREFRESH_OP_PUT:
            if (ngx_http_tokenrefresh_record_scan(&rd, m->max_token_size, 0,
                                                  &rec)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            e.name = rec.name.data;
            e.name_len = rec.name.len;
            e.rec = rec.data;
            e.rec_len = rec.len;
            e.created = rec.created;
            e.last = rec.last;
            e.session = rec.session;
            break;

        case NGX_HTTP_TOKENREFRESH_OP_GONE:
        case NGX_HTTP_TOKENREFRESH_OP_SPENT:
            if (ngx_http_tokenrefresh_get_str(&rd, &digest, 0,
                                              NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            e.name = digest.data;
            e.name_len = digest.len;
            e.session = 1;
            break;

        default:
            return NGX_ERROR;
        }

        /* what the snapshot already holds */

        if (seq <= snapshot) {
            continue;
        }

        if (op == NGX_HTTP_TOKENREFRESH_OP_SPENT) {
            if (ngx_http_tokenrefresh_add_spent(mg, seq, e.name) != NGX_OK) {
                return NGX_ERROR;
            }

            continue;
        }

        if (ngx_http_tokenrefresh_add_entry(mg, &e) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return (rd.pos == rd.last) ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_tokenrefresh_add_entry(ngx_http_tokenrefresh_merger_t *mg,
    ngx_http_tokenrefresh_entry_t *e)
{
    void  *p;

    if (mg->nentries == mg->nalloc) {
        mg->nalloc = mg->nalloc ? 2 * mg->nalloc : 64;

        p = realloc(mg->entries,
                    mg->nalloc * sizeof(ngx_http_tokenrefresh_entry_t));
        if (p == NULL) {
            return NGX_ERROR;
        }

        mg->entries = p;
    }

    e->ord = mg->ord++;
    mg->entries[mg->nentries++] = *e;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_add_spent(ngx_http_tokenrefresh_merger_t *mg,
    uint64_t seq, u_char *digest)
{
    void                                 *p;
    ngx_http_tokenrefresh_spent_entry_t  *s;

    if (mg->nspent == mg->nspalloc) {
        mg->nspalloc = mg->nspalloc ? 2 * mg->nspalloc : 64;

        p = realloc(mg->spent, mg->nspalloc
                               * sizeof(ngx_http_tokenrefresh_spent_entry_t));
        if (p == NULL) {
            return NGX_ERROR;
        }

        mg->spent = p;
    }

    s = &mg->spent[mg->nspent++];
    s->seq = seq;
    s->ord = mg->ord++;
    s->digest = digest;

    return NGX_OK;
}


/* by kind, name, then age: the newest of a name is the last of its run */

static int ngx_libc_cdecl
ngx_http_tokenrefresh_entry_cmp(const void *one, const void *two)
{
    int                             rc;
    const ngx_http_tokenrefresh_entry_t  *a, *b;

    a = one;
    b = two;

    if (a->session != b->session) {
        return a->session < b->session ? -1 : 1;
    }

    if (a->name_len != b->name_len) {
        return a->name_len < b->name_len ? -1 : 1;
    }

    rc = ngx_memcmp(a->name, b->name, a->name_len);
    if (rc) {
        return rc;
    }

    if (a->seq != b->seq) {
        return a->seq < b->seq ? -1 : 1;
    }

    return a->ord < b->ord ? -1 : 1;
}


static int ngx_libc_cdecl
ngx_http_tokenrefresh_recent_cmp(const void *one, const void *two)
{
    ngx_http_tokenrefresh_entry_t  *a, *b;

    a = *(ngx_http_tokenrefresh_entry_t **) one;
    b = *(ngx_http_tokenrefresh_entry_t **) two;

    if (a->last != b->last) {
        return a->last > b->last ? -1 : 1;
    }

    return 0;
}


static int ngx_libc_cdecl
ngx_http_tokenrefresh_spent_cmp(const void *one, const void *two)
{
    const ngx_http_tokenrefresh_spent_entry_t  *a, *b;

    a = one;
    b = two;

    if (a->seq != b->seq) {
        return a->seq < b->seq ? -1 : 1;
    }

    return a->ord < b->ord ? -1 : 1;
}


u_char *
ngx_http_tokenrefresh_put(u_char *p, uint64_t v, size_t n)
{
    while (n--) {
        *p++ = (u_char) (v & 0xff);
        v >>= 8;
    }

    return p;
}


ngx_int_t
ngx_http_tokenrefresh_get(ngx_http_tokenrefresh_reader_t *rd, uint64_t *v,
    size_t n)
{
    size_t  i;

    if ((size_t) (rd->last - rd->pos) < n) {
        return NGX_ERROR;
    }

    *v = 0;

    for (i = 0; i < n; i++) {
        *v |= (uint64_t) rd->pos[i] << (8 * i);
    }

    rd->pos += n;

    return NGX_OK;
}


/* lenlen: the size of the length before the bytes, 0 for a fixed size */

ngx_int_t
ngx_http_tokenrefresh_get_str(ngx_http_tokenrefresh_reader_t *rd,
    ngx_str_t *s, size_t lenlen, size_t max)
{
    uint64_t  len;

    if (lenlen == 0) {
        len = max;

    } else if (ngx_http_tokenrefresh_get(rd, &len, lenlen) != NGX_OK
               || len > max)
    {
        return NGX_ERROR;
    }

    if ((uint64_t) (rd->last - rd->pos) < len) {
        return NGX_ERROR;
    }

    s->data = rd->pos;
    s->len = (size_t) len;
    rd->pos += len;

    return NGX_OK;
}
