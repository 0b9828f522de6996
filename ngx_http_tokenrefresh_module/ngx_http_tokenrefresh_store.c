
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * The shared zone: credentials in a slab-allocated rbtree, the lease that
 * lets exactly one worker refresh a credential, generations, back-off and
 * counters.  Every function here holds the slab mutex only for copies and
 * compare-and-set style updates, never across I/O: a worker that dies
 * holding the slab mutex gets it released by the master, and a worker that
 * dies holding a lease loses it when the lease deadline passes.
 *
 * The lease is also the fence: a token answer changes a credential only
 * while the worker that asked for it still holds the lease it took, and a
 * refused refresh token is dropped only if it is still the one held.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <openssl/crypto.h>


/*
 * Changes to what ngx_http_tokenrefresh_acquire_fast() reads are made
 * under the mutex, between two increments of node->wseq: a reader that
 * saw the same even value before and after its copy read a consistent
 * token.  (A slab chunk freed meanwhile is still mapped memory.)
 */

#define ngx_http_tokenrefresh_write_begin(node)                               \
    (node)->wseq++;                                                           \
    ngx_memory_barrier()

#define ngx_http_tokenrefresh_write_end(node)                                 \
    ngx_memory_barrier();                                                     \
    (node)->wseq++

#if (NGX_HAVE_GCC_ATOMIC)
#define ngx_http_tokenrefresh_load_acquire(p)                                 \
    __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define ngx_http_tokenrefresh_load(p)                                         \
    __atomic_load_n(p, __ATOMIC_RELAXED)
#else
#define ngx_http_tokenrefresh_load_acquire(p)                                 \
    (*(volatile __typeof__(*(p)) *) (p))
#define ngx_http_tokenrefresh_load(p)                                         \
    (*(volatile __typeof__(*(p)) *) (p))
#endif


/* the hits of the lock-free path are added to the node at least this often */
#define NGX_HTTP_TOKENREFRESH_HITS_FLUSH  1024


static ngx_int_t ngx_http_tokenrefresh_acquire_fast(
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_loc_conf_t *tlcf,
    ngx_http_tokenrefresh_acquire_t *res);
static ngx_http_tokenrefresh_node_t *ngx_http_tokenrefresh_find(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf, ngx_log_t *log);
static ngx_http_tokenrefresh_node_t *ngx_http_tokenrefresh_session_find(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_ctx_t *ctx,
    int64_t now, ngx_log_t *log);
static ngx_int_t ngx_http_tokenrefresh_room(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_log_t *log);
static ngx_uint_t ngx_http_tokenrefresh_decide(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node,
    ngx_http_tokenrefresh_loc_conf_t *tlcf, int64_t now,
    ngx_http_tokenrefresh_acquire_t *res);
static ngx_int_t ngx_http_tokenrefresh_hand_out(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_loc_conf_t *tlcf,
    ngx_http_tokenrefresh_acquire_t *res);
static ngx_uint_t ngx_http_tokenrefresh_grant(
    ngx_http_tokenrefresh_node_t *node,
    ngx_http_tokenrefresh_loc_conf_t *tlcf);
static ngx_uint_t ngx_http_tokenrefresh_token_valid(
    ngx_http_tokenrefresh_node_t *node, int64_t now);
static ngx_uint_t ngx_http_tokenrefresh_fleet_workers(
    ngx_http_tokenrefresh_zone_t *zone);
static ngx_uint_t ngx_http_tokenrefresh_unsynced(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node);
static ngx_uint_t ngx_http_tokenrefresh_backing_off(
    ngx_http_tokenrefresh_node_t *node);
static ngx_uint_t ngx_http_tokenrefresh_lease_free(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node,
    ngx_log_t *log);
static ngx_uint_t ngx_http_tokenrefresh_alive(ngx_pid_t pid);
static ngx_uint_t ngx_http_tokenrefresh_lease_held(
    ngx_http_tokenrefresh_node_t *node, ngx_http_tokenrefresh_refresh_t *rf);
static ngx_uint_t ngx_http_tokenrefresh_may_lease(
    ngx_http_tokenrefresh_zone_t *zone);
static void ngx_http_tokenrefresh_take_lease(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node,
    ngx_uint_t grant, ngx_http_tokenrefresh_loc_conf_t *tlcf);
static void ngx_http_tokenrefresh_rbtree_insert_value(
    ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);
static ngx_http_tokenrefresh_node_t *ngx_http_tokenrefresh_lookup(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name, uint32_t hash,
    ngx_uint_t session);
static ngx_http_tokenrefresh_node_t *ngx_http_tokenrefresh_create(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name, uint32_t hash,
    ngx_http_tokenrefresh_session_t *ss, ngx_uint_t evict, ngx_log_t *log);
static void *ngx_http_tokenrefresh_alloc(ngx_http_tokenrefresh_zone_t *zone,
    size_t size, ngx_http_tokenrefresh_node_t *keep, ngx_uint_t evict,
    ngx_log_t *log);
static ngx_uint_t ngx_http_tokenrefresh_evict(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *keep,
    ngx_uint_t evict, ngx_log_t *log);
static void ngx_http_tokenrefresh_delete(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *tn);
static ngx_int_t ngx_http_tokenrefresh_bearer(ngx_pool_t *pool,
    ngx_str_t *dst, u_char *access, size_t len);
static int64_t ngx_http_tokenrefresh_refresh_at(int64_t issued,
    int64_t expires, ngx_msec_t ahead);
static ngx_int_t ngx_http_tokenrefresh_copy(ngx_pool_t *pool, ngx_str_t *dst,
    u_char *src, size_t len);
static ngx_msec_t ngx_http_tokenrefresh_backoff_delay(ngx_uint_t fails,
    ngx_msec_t min, ngx_msec_t max);
static ngx_int_t ngx_http_tokenrefresh_set_tokens(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node,
    ngx_http_tokenrefresh_token_t *tok, ngx_uint_t generation,
    ngx_uint_t evict, ngx_log_t *log);


#if (NGX_DEBUG)
static const char  *ngx_http_tokenrefresh_actions[] = {
    "use", "use and refresh ahead", "fetch", "wait", "fail", "no room"
};
#endif


ngx_int_t
ngx_http_tokenrefresh_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_tokenrefresh_zone_t  *ozone = data;

    size_t                         len;
    ngx_int_t                      rc;
    ngx_http_tokenrefresh_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {

        /*
         * a reload that keeps the zone keeps its tokens, newer than the
         * state file's; a seed only applies to a credential it lacks
         */

        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;

        /*
         * a state file the zone did not write until now: the journal
         * holds none of the zone's credentials, a worker writes them all
         */

        if (zone->state
            && (ozone->state == NULL
                || ozone->state->real.len != zone->state->real.len
                || ngx_strncmp(ozone->state->real.data,
                               zone->state->real.data,
                               zone->state->real.len)
                   != 0))
        {
            zone->sh->resave = 1;

        } else if (zone->state
                   && ngx_memcmp(ozone->state->key, zone->state->key,
                                 NGX_HTTP_TOKENREFRESH_KEY_LEN)
                      != 0)
        {
            /* on disk, what the old key sealed is sealed again at a start */

            ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                          "tokenrefresh: the key of zone \"%V\" changed in a "
                          "reload: restart nginx with both keys (the new "
                          "one first) before the old one goes",
                          &shm_zone->shm.name);
        }

        ngx_http_tokenrefresh_seed(zone, shm_zone->shm.log);

        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;

        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_tokenrefresh_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_memzero(zone->sh, sizeof(ngx_http_tokenrefresh_shctx_t));

    /* 0 in a node means never checked with the fleet */
    zone->sh->fleet.epoch = 1;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_tokenrefresh_rbtree_insert_value);

    ngx_queue_init(&zone->sh->lru);

    len = sizeof(" in tokenrefresh zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in tokenrefresh zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is reported by the module, with the credential named */

    zone->shpool->log_nomem = 0;

    /*
     * A new zone: a start, a restart, or a reload that changed its size.
     * In the last case the zone it replaces is newer than the state file
     * and its workers may still be refreshing: it is copied, and what
     * they get is handed over (ngx_http_tokenrefresh_handover.c).
     */

    rc = ngx_http_tokenrefresh_adopt(zone, shm_zone->shm.log);

    if (rc != NGX_DECLINED) {
        /* seeds apply at the commit point, after the last copy */
        return rc;
    }

    /* "nginx -t" reads no state file: it changes and logs nothing */

    if (zone->state && !ngx_test_config
        && ngx_http_tokenrefresh_state_load(zone, shm_zone->shm.log)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_tokenrefresh_seed(zone, shm_zone->shm.log);

    return NGX_OK;
}


/*
 * What a request does with its credential, in three steps as limit_req
 * does: find the credential (creating it if needed), decide, and hand
 * out what the decision needs, in one critical section.
 */

ngx_int_t
ngx_http_tokenrefresh_acquire(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf,
    ngx_http_tokenrefresh_acquire_t *res)
{
    int64_t                        now;
    ngx_log_t                     *log;
    ngx_int_t                      rc;
    ngx_http_tokenrefresh_ref_t    ref;
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    if (ngx_http_tokenrefresh_acquire_fast(ctx, tlcf, res) == NGX_OK) {
        return NGX_OK;
    }

    zone = ctx->zone;
    log = ctx->request->connection->log;

again:

    ngx_memzero(res, sizeof(ngx_http_tokenrefresh_acquire_t));

    now = ngx_http_tokenrefresh_now();

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (ctx->session) {
        node = ngx_http_tokenrefresh_session_find(zone, ctx, now, log);

        if (node == NULL) {
            ngx_shmtx_unlock(&zone->shpool->mutex);
            res->action = NGX_HTTP_TOKENREFRESH_ENDED;
            return NGX_OK;
        }

    } else {
        node = ngx_http_tokenrefresh_find(zone, ctx, tlcf, log);

        if (node == NULL) {
            zone->sh->nomem++;
            ngx_shmtx_unlock(&zone->shpool->mutex);

            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "tokenrefresh: zone \"%V\" is full, no room for "
                          "credential \"%V\"",
                          &zone->shm_zone->shm.name, &ctx->log_name);

            res->action = NGX_HTTP_TOKENREFRESH_NOMEM;
            return NGX_OK;
        }
    }

    if (node->handover && ngx_http_tokenrefresh_take_over(zone, node, log)) {

        /*
         * the outcome of a refresh in the zone this one replaced, taken
         * in with the lease still held: on disk before anyone may
         * refresh again
         */

        ref.node = node;
        ref.id = node->id;

        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (zone->state) {
            (void) ngx_http_tokenrefresh_state_save(zone, log);
        }

        ngx_shmtx_lock(&zone->shpool->mutex);

        node = ngx_http_tokenrefresh_deref(&ref);

        if (node && node->handover) {
            ngx_http_tokenrefresh_handover_end(zone, node);
            node->lease_pid = 0;
            node->seq++;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_http_tokenrefresh_wake_local();

        goto again;
    }

    res->ref.node = node;
    res->ref.id = node->id;
    res->seq = node->seq;
    res->action = ngx_http_tokenrefresh_decide(zone, node, tlcf, now, res);

    if (res->action == NGX_HTTP_TOKENREFRESH_FAIL && res->no_grant
        && node->session)
    {
        /* a session with no token and no refresh token is over */

        zone->sh->sessions_refused++;
        ngx_http_tokenrefresh_delete(zone, node);
        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tokenrefresh: %V ended: no token and no refresh "
                      "token", &ctx->log_name);

        res->action = NGX_HTTP_TOKENREFRESH_ENDED;
        return NGX_OK;
    }

    rc = ngx_http_tokenrefresh_hand_out(zone, node, ctx, tlcf, res);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, log, 0,
                   "tokenrefresh: credential \"%V\": %s, generation %ui, "
                   "seq %ui, lease %ui",
                   &ctx->log_name, ngx_http_tokenrefresh_actions[res->action],
                   res->generation, res->seq, res->lease_seq);

    return rc;
}


/* the credential of a request, found or created; the lock is held */

static ngx_http_tokenrefresh_node_t *
ngx_http_tokenrefresh_find(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_loc_conf_t *tlcf,
    ngx_log_t *log)
{
    ngx_http_tokenrefresh_node_t  *node;

    node = ngx_http_tokenrefresh_deref(&tlcf->fixed);

    if (node == NULL) {
        node = ngx_http_tokenrefresh_lookup(zone, &ctx->name, ctx->hash, 0);
    }

    if (node == NULL) {
        node = ngx_http_tokenrefresh_create(zone, &ctx->name, ctx->hash, NULL,
                                            1, log);
        if (node == NULL) {
            return NULL;
        }

        if (ngx_http_tokenrefresh_room(zone, node, log) != NGX_OK) {
            ngx_http_tokenrefresh_delete(zone, node);
            return NULL;
        }

    } else if (ngx_queue_head(&zone->sh->lru) != &node->lru) {
        ngx_queue_remove(&node->lru);
        ngx_queue_insert_head(&zone->sh->lru, &node->lru);
        node->moved = ngx_current_msec;
    }

    node->used = ngx_current_msec;

    if (tlcf->login_uri.len) {
        node->login = 1;
    }

    if (!ctx->waiting) {
        node->counters.requests++;
    }

    if (tlcf->credential->lengths == NULL) {
        /* a fixed name: the next requests may skip the lookup */
        tlcf->fixed.node = node;
        tlcf->fixed.id = node->id;

        if (tlcf->hits) {
            node->counters.requests += tlcf->hits;
            tlcf->hits = 0;
        }
    }

    return node;
}


/*
 * A user's session, found by its handle's digest; the lock is held.  A
 * session is never created here (a handle nobody issued is refused
 * without a call anywhere), and one past its idle time or its lifetime
 * ends on the spot.
 */

static ngx_http_tokenrefresh_node_t *
ngx_http_tokenrefresh_session_find(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_ctx_t *ctx, int64_t now, ngx_log_t *log)
{
    const char                       *why;
    ngx_http_tokenrefresh_node_t     *node;
    ngx_http_tokenrefresh_session_t  *ss;

    node = ngx_http_tokenrefresh_lookup(zone, &ctx->name, ctx->hash, 1);

    if (node == NULL) {
        return NULL;
    }

    ss = node->session;

    if (now - ss->created >= (int64_t) zone->session_lifetime) {
        zone->sh->sessions_expired++;
        why = "reached its lifetime";

    } else if (now - ss->last >= (int64_t) zone->session_idle) {
        zone->sh->sessions_idle++;
        why = "was idle too long";

    } else {
        ss->last = now;

        /*
         * the journal learns of a use now and then, so that a session in
         * use is not taken for an idle one after a restart
         */

        if (zone->state
            && now - ss->saved >= (int64_t) zone->session_idle / 4)
        {
            ss->saved = now;
            ctx->touch = 1;
        }

        if (ngx_queue_head(&zone->sh->lru) != &node->lru) {
            ngx_queue_remove(&node->lru);
            ngx_queue_insert_head(&zone->sh->lru, &node->lru);
            node->moved = ngx_current_msec;
        }

        node->used = ngx_current_msec;

        if (!ctx->waiting) {
            node->counters.requests++;
        }

        return node;
    }

    if (node->lease_pid
        && (ngx_msec_int_t) (node->lease_deadline - ngx_current_msec) > 0)
    {
        /* its refresh is in flight: it ends once that is settled */
        return node;
    }

    ngx_http_tokenrefresh_delete(zone, node);

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "tokenrefresh: %V ended: it %s", &ctx->log_name, why);

    return NULL;
}


/*
 * A new session, with the tokens of the login that created it: all of it
 * is allocated before it is linked, so that a full zone (after evicting
 * the least recently used sessions, never a named credential) leaves
 * nothing behind.
 */

ngx_int_t
ngx_http_tokenrefresh_session_create(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest, ngx_http_tokenrefresh_token_t *tok, u_char *subject,
    ngx_str_t *kept, int64_t created, uint32_t fleet_gen, ngx_log_t *log)
{
    size_t                            size;
    int64_t                           now;
    ngx_str_t                         name;
    ngx_http_tokenrefresh_node_t     *node;
    ngx_http_tokenrefresh_session_t  *ss;

    name.data = digest;
    name.len = NGX_HTTP_TOKENREFRESH_DIGEST_LEN;

    now = ngx_http_tokenrefresh_now();

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* taken in from the fleet by another worker meanwhile: once only */

    if (ngx_http_tokenrefresh_lookup(zone, &name,
                                     ngx_http_tokenrefresh_digest_key(digest),
                                     1))
    {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_DECLINED;
    }

    size = offsetof(ngx_http_tokenrefresh_session_t, kept) + kept->len;

    ss = ngx_http_tokenrefresh_alloc(zone, size, NULL,
                                     NGX_HTTP_TOKENREFRESH_EVICT_SESSIONS,
                                     log);
    if (ss == NULL) {
        goto nomem;
    }

    ss->created = created ? created : now;
    ss->last = now;
    ss->saved = now;
    ngx_memcpy(ss->subject, subject, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    ss->kept_len = (u_short) kept->len;
    ngx_memcpy(ss->kept, kept->data, kept->len);

    node = ngx_http_tokenrefresh_create(zone, &name,
                                    ngx_http_tokenrefresh_digest_key(digest),
                                    ss, NGX_HTTP_TOKENREFRESH_EVICT_SESSIONS,
                                    log);
    if (node == NULL) {
        ngx_slab_free_locked(zone->shpool, ss);
        goto nomem;
    }

    if (ngx_http_tokenrefresh_set_tokens(zone, node, tok, 1,
                                         NGX_HTTP_TOKENREFRESH_EVICT_SESSIONS,
                                         log)
        != NGX_OK)
    {
        ngx_http_tokenrefresh_delete(zone, node);
        goto nomem;
    }

    node->fleet_gen = fleet_gen;

    node->counters.fetches[NGX_HTTP_TOKENREFRESH_GRANT_LOGIN]
                          [NGX_HTTP_TOKENREFRESH_OK]++;
    node->last_outcome = NGX_HTTP_TOKENREFRESH_OK;
    node->last_grant = NGX_HTTP_TOKENREFRESH_GRANT_LOGIN;
    node->last_time = ngx_time();

    zone->sh->sessions_created++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;

nomem:

    zone->sh->nomem++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_ERROR;
}


/*
 * A logout: the session ends now, wherever its refresh is; a copy of its
 * refresh token goes to the caller for a revocation.  NGX_DECLINED: no
 * such session.
 */

ngx_int_t
ngx_http_tokenrefresh_session_end(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest, ngx_pool_t *pool, ngx_str_t *refresh_token,
    ngx_str_t *kept)
{
    ngx_int_t                      rc;
    ngx_str_t                      name;
    ngx_http_tokenrefresh_node_t  *node;

    name.data = digest;
    name.len = NGX_HTTP_TOKENREFRESH_DIGEST_LEN;

    refresh_token->len = 0;
    kept->len = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_lookup(zone, &name,
                                    ngx_http_tokenrefresh_digest_key(digest),
                                    1);
    if (node == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_DECLINED;
    }

    rc = NGX_OK;

    if (pool && node->refresh_len
        && ngx_http_tokenrefresh_copy(pool, refresh_token, node->refresh,
                                      node->refresh_len)
           != NGX_OK)
    {
        rc = NGX_ERROR;
    }

    if (pool && node->session->kept_len
        && ngx_http_tokenrefresh_copy(pool, kept, node->session->kept,
                                      node->session->kept_len)
           != NGX_OK)
    {
        rc = NGX_ERROR;
    }

    zone->sh->sessions_logout++;
    ngx_http_tokenrefresh_delete(zone, node);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/*
 * An operator ends sessions: those of one subject (the JWT "sub" digest),
 * or the one whose label starts with the fingerprint given.  Returns how
 * many ended.
 */

ngx_uint_t
ngx_http_tokenrefresh_session_end_all(ngx_http_tokenrefresh_zone_t *zone,
    u_char *subject, u_char *fp, size_t fp_len)
{
    u_char                         label[NGX_HTTP_TOKENREFRESH_LABEL_LEN];
    ngx_uint_t                     n;
    ngx_queue_t                   *q, *next;
    ngx_http_tokenrefresh_node_t  *tn;

    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&zone->sh->lru);
         q != ngx_queue_sentinel(&zone->sh->lru);
         q = next)
    {
        next = ngx_queue_next(q);
        tn = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        if (tn->session == NULL) {
            continue;
        }

        if (subject) {
            if (CRYPTO_memcmp(tn->session->subject, subject,
                              NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
                != 0)
            {
                continue;
            }

        } else {
            (void) ngx_http_tokenrefresh_node_label(label, tn);

            if (fp_len > NGX_HTTP_TOKENREFRESH_LABEL_LEN
                || ngx_strncmp(label, fp, fp_len) != 0)
            {
                continue;
            }
        }

        zone->sh->sessions_ended++;
        ngx_http_tokenrefresh_delete(zone, tn);
        n++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return n;
}


/* how a credential is named in a log line or on the status page */

u_char *
ngx_http_tokenrefresh_node_label(u_char *dst,
    ngx_http_tokenrefresh_node_t *node)
{
    if (node->session) {
        return ngx_http_tokenrefresh_session_label(dst, node->name);
    }

    return ngx_http_tokenrefresh_printable(dst, node->name, node->len);
}


u_char *
ngx_http_tokenrefresh_session_label(u_char *dst, u_char *digest)
{
    dst = ngx_cpymem(dst, "session:", sizeof("session:") - 1);

    return ngx_hex_dump(dst, digest, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
}


/*
 * A new credential must have room for its tokens too, or its login would
 * be a call to the token endpoint for a token the zone then drops: the
 * room is made now (evicting what can be evicted), as large as the
 * largest tokens stored so far, and given back for the store to use.
 */

static ngx_int_t
ngx_http_tokenrefresh_room(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_log_t *log)
{
    u_char  *access, *refresh;

    access = NULL;
    refresh = NULL;

    if (zone->sh->access_max) {
        access = ngx_http_tokenrefresh_alloc(zone, zone->sh->access_max,
                                             node, 1, log);
        if (access == NULL) {
            return NGX_ERROR;
        }
    }

    if (zone->sh->refresh_max) {
        refresh = ngx_http_tokenrefresh_alloc(zone, zone->sh->refresh_max,
                                              node, 1, log);
        if (refresh == NULL) {
            if (access) {
                ngx_slab_free_locked(zone->shpool, access);
            }

            return NGX_ERROR;
        }

        ngx_slab_free_locked(zone->shpool, refresh);
    }

    if (access) {
        ngx_slab_free_locked(zone->shpool, access);
    }

    return NGX_OK;
}


/* the decision alone: nothing is changed here but an expired lease */

static ngx_uint_t
ngx_http_tokenrefresh_decide(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_http_tokenrefresh_loc_conf_t *tlcf,
    int64_t now, ngx_http_tokenrefresh_acquire_t *res)
{
    ngx_log_t  *log;

    log = zone->shm_zone->shm.log;

    res->grant = ngx_http_tokenrefresh_grant(node, tlcf);

    /*
     * a good token this node has not checked with the fleet: checked
     * first, as a refresh would wait (ngx_http_tokenrefresh_fleet.c)
     */

    res->sync = (ngx_http_tokenrefresh_token_valid(node, now)
                 && res->grant != NGX_HTTP_TOKENREFRESH_GRANT_NONE
                 && !ngx_http_tokenrefresh_backing_off(node)
                 && ngx_http_tokenrefresh_unsynced(zone, node));

    if (ngx_http_tokenrefresh_token_valid(node, now) && !res->sync) {

        if (now < ngx_http_tokenrefresh_refresh_at(node->issued,
                                                   node->expires, tlcf->ahead)
            || res->grant == NGX_HTTP_TOKENREFRESH_GRANT_NONE
            || ngx_http_tokenrefresh_backing_off(node)
            || !ngx_http_tokenrefresh_may_lease(zone)
            || !ngx_http_tokenrefresh_lease_free(zone, node, log))
        {
            return NGX_HTTP_TOKENREFRESH_USE;
        }

        return NGX_HTTP_TOKENREFRESH_USE_AND_FETCH;
    }

    if (!ngx_http_tokenrefresh_lease_free(zone, node, log)) {
        /* someone, in this worker or another, is refreshing: wait */
        return NGX_HTTP_TOKENREFRESH_WAIT;
    }

    if (ngx_http_tokenrefresh_backing_off(node)) {
        res->status = node->fail_status;
        res->retry_after = node->retry_at - ngx_current_msec;
        return NGX_HTTP_TOKENREFRESH_FAIL;
    }

    if (res->grant == NGX_HTTP_TOKENREFRESH_GRANT_NONE) {

        /* until an operator gives it a seed, or a location a login */

        res->status = tlcf->failure_status;
        res->retry_after = tlcf->backoff_max;
        res->no_grant = 1;
        return NGX_HTTP_TOKENREFRESH_FAIL;
    }

    if (!ngx_http_tokenrefresh_may_lease(zone)) {

        /*
         * a worker that is shutting down, or whose zone a reload
         * replaced, starts no refresh: the client comes back to a worker
         * that can
         */

        res->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        res->retry_after = 1000;
        return NGX_HTTP_TOKENREFRESH_FAIL;
    }

    return NGX_HTTP_TOKENREFRESH_FETCH;
}


/* carries out the decision: copies and the lease; the lock is held */

static ngx_int_t
ngx_http_tokenrefresh_hand_out(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf,
    ngx_http_tokenrefresh_acquire_t *res)
{
    ngx_uint_t   warn;
    ngx_msec_t   until;
    ngx_pool_t  *pool;

    pool = ctx->request->pool;

    switch (res->action) {

    case NGX_HTTP_TOKENREFRESH_WAIT:

        until = ngx_current_msec + tlcf->wait_timeout;

        if ((ngx_msec_int_t) (until - node->wait_until) > 0) {
            node->wait_until = until;
        }

        if (!ctx->waiting) {
            node->waiting++;
        }

        return NGX_OK;

    case NGX_HTTP_TOKENREFRESH_FAIL:

        node->counters.failed++;

        if (!res->no_grant) {
            return NGX_OK;
        }

        warn = !node->warned;
        node->warned = 1;

        if (warn) {
            ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                          "tokenrefresh: credential \"%V\" has no token, "
                          "no refresh token and no \"tokenrefresh_login\" "
                          "location to get one", &ctx->log_name);
        }

        return NGX_OK;

    case NGX_HTTP_TOKENREFRESH_FETCH:

        if (!ctx->waiting) {
            node->waiting++;
        }

        break;

    default: /* USE, USE_AND_FETCH */

        if (ngx_http_tokenrefresh_bearer(pool, &res->token, node->access,
                                         node->access_len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        res->generation = node->generation;

        if (res->action == NGX_HTTP_TOKENREFRESH_USE) {
            return NGX_OK;
        }
    }

    /* FETCH, USE_AND_FETCH: this worker refreshes */

    ngx_http_tokenrefresh_take_lease(zone, node, res->grant, tlcf);

    res->lease_seq = node->lease_seq;

    /* what the answer may replace: a seed given meanwhile is newer */
    ngx_memcpy(res->refresh_digest, node->refresh_digest,
               NGX_HTTP_TOKENREFRESH_DIGEST_LEN);

    /* the token request may send both; their copies go with it */

    if (res->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH
        && ngx_http_tokenrefresh_copy(pool, &res->refresh_token,
                                      node->refresh, node->refresh_len)
           != NGX_OK)
    {
        goto failed;
    }

    if (node->access
        && ngx_http_tokenrefresh_copy(pool, &res->access_token,
                                      node->access, node->access_len)
           != NGX_OK)
    {
        goto failed;
    }

    if (node->session && node->session->kept_len
        && ngx_http_tokenrefresh_copy(pool, &res->kept, node->session->kept,
                                      node->session->kept_len)
           != NGX_OK)
    {
        goto failed;
    }

    return NGX_OK;

failed:

    node->lease_pid = 0;
    node->seq++;

    return NGX_ERROR;
}


static ngx_uint_t
ngx_http_tokenrefresh_grant(ngx_http_tokenrefresh_node_t *node,
    ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    if (node->refresh_len && tlcf->refresh_uri.len) {
        return NGX_HTTP_TOKENREFRESH_GRANT_REFRESH;
    }

    /* a user's session is never logged in again behind the user's back */

    if (tlcf->login_uri.len && node->session == NULL) {
        return NGX_HTTP_TOKENREFRESH_GRANT_LOGIN;
    }

    return NGX_HTTP_TOKENREFRESH_GRANT_NONE;
}


static ngx_uint_t
ngx_http_tokenrefresh_token_valid(ngx_http_tokenrefresh_node_t *node,
    int64_t now)
{
    return node->access && now < node->expires
           && node->rejected != node->generation;
}


/*
 * A token this node has not checked with the fleet: since it started (from
 * its state file), since a worker subscribed again (announcements may have
 * been missed), or since the fleet announced a newer generation.  The
 * fleet may have newer tokens, and this one may be revoked: it is asked
 * first, if it can be; with redis away, the token is used.
 */

static ngx_uint_t
ngx_http_tokenrefresh_unsynced(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node)
{
    if (zone->redis == NULL) {
        return 0;
    }

    /* a user's session: only news of it, not every session at each epoch */

    if (node->session) {
        return node->fleet_gen < node->fleet_news
               && ngx_http_tokenrefresh_redis_up(zone);
    }

    return (node->fleet_epoch == 0
            || node->fleet_epoch != zone->sh->fleet.epoch
            || node->fleet_gen < node->fleet_news)
           && ngx_http_tokenrefresh_redis_up(zone);
}


/* the fleet announced a generation of a credential (a redis message) */

ngx_int_t
ngx_http_tokenrefresh_fleet_heard(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, uint32_t generation, ngx_uint_t session)
{
    ngx_int_t                      rc;
    ngx_http_tokenrefresh_node_t  *node;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_node_of(zone, name, session);

    if (node && node->fleet_gen < generation) {
        if (node->fleet_news < generation) {
            node->fleet_news = generation;
        }

        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/* the workers connected to the fleet's redis: those alive in a slot */

static ngx_uint_t
ngx_http_tokenrefresh_fleet_workers(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_pid_t   pid;
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < NGX_HTTP_TOKENREFRESH_FLEET_SLOTS; i++) {
        pid = (ngx_pid_t) zone->sh->fleet.worker[i];

        if (pid && (pid == ngx_pid || kill(pid, 0) == 0)) {
            n++;
        }
    }

    return n;
}


/*
 * Whether another worker of this node holds a lease (a refresh in flight):
 * redis lost its data, and that worker has not yet claimed its lease again
 */

ngx_uint_t
ngx_http_tokenrefresh_fleet_leases_elsewhere(
    ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_uint_t                     held;
    ngx_queue_t                   *q;
    ngx_http_tokenrefresh_node_t  *node;

    held = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&zone->sh->lru);
         q != ngx_queue_sentinel(&zone->sh->lru) && !held;
         q = ngx_queue_next(q))
    {
        node = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        held = (node->lease_pid && node->lease_pid != ngx_pid
                && (ngx_msec_int_t) (node->lease_deadline - ngx_current_msec)
                   > 0
                && ngx_http_tokenrefresh_alive(node->lease_pid));
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return held;
}


/* checked with the fleet: at this generation, in this epoch */

void
ngx_http_tokenrefresh_fleet_synced(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_ref_t *ref, uint32_t generation, uint32_t epoch)
{
    ngx_http_tokenrefresh_node_t  *node;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(ref);

    if (node) {
        if (node->fleet_gen < generation) {
            node->fleet_gen = generation;
        }

        node->fleet_epoch = epoch;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


static ngx_uint_t
ngx_http_tokenrefresh_backing_off(ngx_http_tokenrefresh_node_t *node)
{
    return node->retry_at
           && (ngx_msec_int_t) (node->retry_at - ngx_current_msec) > 0;
}


static ngx_uint_t
ngx_http_tokenrefresh_may_lease(ngx_http_tokenrefresh_zone_t *zone)
{
    return !ngx_exiting && !ngx_terminate && !zone->sh->superseded;
}


static ngx_uint_t
ngx_http_tokenrefresh_lease_held(ngx_http_tokenrefresh_node_t *node,
    ngx_http_tokenrefresh_refresh_t *rf)
{
    return node->lease_pid == ngx_pid && node->lease_seq == rf->lease_seq
           && !node->handover;
}


/*
 * A new token is written in full before the old one is freed and before
 * the generation moves, so a reader never sees a half-written token; if
 * the zone has no room for it, the last good token stays.  Only the
 * holder of the lease may store, and a refresh token replaces only the
 * one the refresh started from: a seed given meanwhile is newer.
 */

ngx_int_t
ngx_http_tokenrefresh_store(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_http_tokenrefresh_token_t *tok, ngx_log_t *log)
{
    ngx_uint_t                     keep_refresh;
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;
    ngx_http_tokenrefresh_token_t  t;

    zone = rf->zone;
    t = *tok;
    keep_refresh = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&rf->ref);

    if (node == NULL || !ngx_http_tokenrefresh_lease_held(node, rf)) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: the %s answer for credential \"%V\" is "
                      "dropped: %s",
                      ngx_http_tokenrefresh_grant_names[rf->grant],
                      &rf->log_name,
                      node ? "this worker no longer holds the lease"
                           : "the credential was evicted");
        return NGX_DECLINED;
    }

    if (t.refresh_token.len
        && ngx_memcmp(node->refresh_digest, rf->digest,
                      NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
           != 0)
    {
        /* a seed replaced the refresh token while this one was asked */
        t.refresh_token.len = 0;
        keep_refresh = 1;
    }

    /* no access token: keeping only the successor of a refresh token */

    if (ngx_http_tokenrefresh_set_tokens(zone, node, &t,
                                         node->generation + 1,
                                         node->session
                                         ? NGX_HTTP_TOKENREFRESH_EVICT_SESSIONS
                                         : NGX_HTTP_TOKENREFRESH_EVICT_ANY,
                                         log)
        != NGX_OK)
    {
        zone->sh->nomem++;
        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: zone \"%V\" is full, the new token of "
                      "credential \"%V\" is dropped, the last good one is "
                      "kept", &zone->shm_zone->shm.name, &rf->log_name);

        return NGX_ERROR;
    }

    if (rf->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH
        && tok->refresh_token.len)
    {
        /* rotated: the refresh token just sent is never sent again */
        ngx_http_tokenrefresh_spend(zone, rf->digest);
    }

    if (t.access_token.len) {
        node->fails = 0;
        node->retry_at = 0;
        node->fail_status = 0;
        node->failed = 0;
        node->warned = 0;

        node->counters.fetches[rf->grant][NGX_HTTP_TOKENREFRESH_OK]++;
        node->last_outcome = NGX_HTTP_TOKENREFRESH_OK;
        node->last_grant = rf->grant;
        node->last_duration = ngx_current_msec - rf->start;
        node->last_time = ngx_time();

        /*
         * waiting requests may use the token now; the lease is released
         * by ngx_http_tokenrefresh_release(), once the state file has it
         */

        node->seq++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (keep_refresh) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tokenrefresh: credential \"%V\" was given a new "
                      "refresh token (a seed) while it was refreshed; the "
                      "new seed is kept", &rf->log_name);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "tokenrefresh: credential \"%V\" stored, generation "
                   "%ui, lease %ui", &rf->log_name, node->generation,
                   rf->lease_seq);

    return NGX_OK;
}


/*
 * Gives a credential new tokens; an empty one keeps what is stored.  Both
 * are copied in before anything is freed, so that a full zone keeps the
 * last good tokens.  The caller holds the lock.
 */

static ngx_int_t
ngx_http_tokenrefresh_set_tokens(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_http_tokenrefresh_token_t *tok,
    ngx_uint_t generation, ngx_uint_t evict, ngx_log_t *log)
{
    u_char  *access, *refresh;

    access = NULL;
    refresh = NULL;

    if (tok->access_token.len) {
        access = ngx_http_tokenrefresh_alloc(zone, tok->access_token.len,
                                             node, evict, log);
        if (access == NULL) {
            return NGX_ERROR;
        }
    }

    if (tok->refresh_token.len) {
        refresh = ngx_http_tokenrefresh_alloc(zone, tok->refresh_token.len,
                                              node, evict, log);
        if (refresh == NULL) {
            if (access) {
                ngx_slab_free_locked(zone->shpool, access);
            }

            return NGX_ERROR;
        }
    }

    if (tok->access_token.len > zone->sh->access_max) {
        zone->sh->access_max = tok->access_token.len;
    }

    if (tok->refresh_token.len > zone->sh->refresh_max) {
        zone->sh->refresh_max = tok->refresh_token.len;
    }

    if (access) {
        ngx_memcpy(access, tok->access_token.data, tok->access_token.len);

        ngx_http_tokenrefresh_write_begin(node);

        if (node->access) {
            ngx_slab_free_locked(zone->shpool, node->access);
        }

        node->access = access;
        node->access_len = tok->access_token.len;
        node->issued = tok->issued;
        node->expires = tok->expires;
        node->generation = generation;

        ngx_http_tokenrefresh_write_end(node);
    }

    if (refresh) {
        ngx_memcpy(refresh, tok->refresh_token.data, tok->refresh_token.len);

        if (node->refresh) {
            ngx_slab_free_locked(zone->shpool, node->refresh);
        }

        node->refresh = refresh;
        node->refresh_len = tok->refresh_token.len;

        ngx_http_tokenrefresh_digest(node->refresh_digest, refresh,
                                     tok->refresh_token.len);
    }

    return NGX_OK;
}


/*
 * A refresh or login that did not produce a token: decide what happens
 * next, and say so in one log line.  The lease is kept until the caller
 * has saved the state: ngx_http_tokenrefresh_release().  Returns NGX_OK
 * if a refused refresh token was dropped (the state file must know).
 */

ngx_int_t
ngx_http_tokenrefresh_fail(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_uint_t outcome, ngx_str_t *reason, ngx_log_t *log)
{
    int64_t                            now;
    ngx_int_t                          rc;
    ngx_msec_t                         delay;
    ngx_uint_t                         valid, relogin, level, status, held,
                                       away;
    const char                        *what, *verb;
    ngx_http_tokenrefresh_node_t      *node;
    ngx_http_tokenrefresh_zone_t      *zone;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    zone = rf->zone;
    tlcf = rf->lcf;
    what = ngx_http_tokenrefresh_grant_names[rf->grant];
    now = ngx_http_tokenrefresh_now();
    delay = 0;
    relogin = 0;
    rc = NGX_DECLINED;

    /*
     * not sent because the fleet's redis is away: the requests fail, with
     * a back-off, as if the provider were (ngx_http_tokenrefresh_fleet.c)
     */
    away = (outcome == NGX_HTTP_TOKENREFRESH_ABORTED && rf->fleet_away);

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&rf->ref);
    held = (node && ngx_http_tokenrefresh_lease_held(node, rf));

    if (!held) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tokenrefresh: %s of credential \"%V\" failed: %V; "
                      "%s", what, &rf->log_name, reason,
                      node ? "this worker no longer holds the lease"
                           : "the credential was evicted meanwhile");
        return NGX_DECLINED;
    }

    node->counters.fetches[rf->grant][outcome]++;

    if (outcome == NGX_HTTP_TOKENREFRESH_UNKNOWN) {
        zone->sh->unknown++;
    }

    if (outcome != NGX_HTTP_TOKENREFRESH_ABORTED) {
        node->last_outcome = outcome;
        node->last_grant = rf->grant;
        node->last_duration = ngx_current_msec - rf->start;
        node->last_time = ngx_time();
    }

    if (outcome == NGX_HTTP_TOKENREFRESH_REFUSED
        && rf->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH
        && node->session)
    {
        /*
         * the backend said no to the user's refresh token: the session is
         * over, and its requests get the session-ended answer
         */

        ngx_http_tokenrefresh_spend(zone, rf->digest);
        zone->sh->sessions_refused++;
        ngx_http_tokenrefresh_delete(zone, node);

        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_http_tokenrefresh_fleet_session_gone(zone, rf->name.data);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tokenrefresh: %V ended: its refresh was refused: %V",
                      &rf->log_name, reason);

        return NGX_OK;
    }

    if (outcome == NGX_HTTP_TOKENREFRESH_REFUSED
        && rf->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH)
    {
        /* a refused refresh token is never sent again */

        ngx_http_tokenrefresh_spend(zone, rf->digest);
        rc = NGX_OK;

        /* but a newer one, a seed given meanwhile, is kept */

        if (node->refresh
            && ngx_memcmp(node->refresh_digest, rf->digest,
                          NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
               == 0)
        {
            ngx_slab_free_locked(zone->shpool, node->refresh);
            node->refresh = NULL;
            node->refresh_len = 0;
            ngx_memzero(node->refresh_digest,
                        NGX_HTTP_TOKENREFRESH_DIGEST_LEN);

            /* the next attempt, right away, is a login */
            relogin = (tlcf->login_uri.len != 0);

        } else {
            /* the next attempt, right away, uses the new one */
            relogin = (node->refresh != NULL);
        }
    }

    if ((outcome != NGX_HTTP_TOKENREFRESH_ABORTED
         && outcome != NGX_HTTP_TOKENREFRESH_UNKNOWN
         && !relogin)
        || away)
    {
        node->fails++;

        if (outcome == NGX_HTTP_TOKENREFRESH_REFUSED
            || outcome == NGX_HTTP_TOKENREFRESH_DENIED)
        {
            /* the provider said no to our credentials: the longest wait */
            delay = tlcf->backoff_max;
            node->failed = 1;

        } else {
            delay = ngx_http_tokenrefresh_backoff_delay(node->fails,
                                                        tlcf->backoff_min,
                                                        tlcf->backoff_max);
        }

        if (rf->retry_after > delay) {
            delay = ngx_min(rf->retry_after, NGX_HTTP_TOKENREFRESH_MAX_RETRY);
        }

        node->retry_at = ngx_current_msec + delay;

        if (node->retry_at == 0) {
            node->retry_at = 1;
        }

        node->fleet_away = away;

        node->fail_status = (outcome == NGX_HTTP_TOKENREFRESH_TIMEDOUT)
                            ? tlcf->timeout_status
                            : (outcome == NGX_HTTP_TOKENREFRESH_NOROOM)
                            ? NGX_HTTP_SERVICE_UNAVAILABLE
                            : tlcf->failure_status;
    }

    valid = ngx_http_tokenrefresh_token_valid(node, now);
    status = node->fail_status;

    node->seq++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (outcome == NGX_HTTP_TOKENREFRESH_ABORTED && !away) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "tokenrefresh: %s of credential \"%V\" abandoned "
                      "before it was sent: %V; the next request takes over",
                      what, &rf->log_name, reason);
        return rc;
    }

    if (outcome == NGX_HTTP_TOKENREFRESH_UNKNOWN) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tokenrefresh: %s of credential \"%V\" was cut after "
                      "it was sent: %V; its outcome is unknown, the next "
                      "request tries again", what, &rf->log_name, reason);
        return rc;
    }

    if (relogin) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tokenrefresh: refresh of credential \"%V\" refused: "
                      "%V; the refresh token is dropped, %s",
                      &rf->log_name, reason,
                      node->refresh ? "using the newer one" : "logging in");
        return rc;
    }

    level = valid ? NGX_LOG_WARN : NGX_LOG_ERR;
    verb = (outcome == NGX_HTTP_TOKENREFRESH_REFUSED
            || outcome == NGX_HTTP_TOKENREFRESH_DENIED)
           ? "refused" : "failed";

    if (valid) {
        ngx_log_error(level, log, 0,
                      "tokenrefresh: %s of credential \"%V\" %s: %V; the "
                      "current token stays in use, next attempt in %M ms",
                      what, &rf->log_name, verb, reason, delay);
        return rc;
    }

    ngx_log_error(level, log, 0,
                  "tokenrefresh: %s of credential \"%V\" %s: %V; requests "
                  "fail with %ui, next attempt in %M ms",
                  what, &rf->log_name, verb, reason, status, delay);

    return rc;
}


/* the only place where a lease held by this worker ends */

void
ngx_http_tokenrefresh_release(ngx_http_tokenrefresh_refresh_t *rf)
{
    ngx_http_tokenrefresh_release_lease(rf->zone, &rf->ref, rf->lease_seq);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "tokenrefresh: lease %ui of credential \"%V\" released",
                   rf->lease_seq, &rf->log_name);
}


/* the same once the refresh's request is gone: by what identifies it */

void
ngx_http_tokenrefresh_release_lease(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_ref_t *ref, ngx_uint_t lease_seq)
{
    ngx_http_tokenrefresh_node_t  *node;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(ref);

    if (node && node->lease_pid == ngx_pid && node->lease_seq == lease_seq
        && !node->handover)
    {
        node->lease_pid = 0;
        node->seq++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


ngx_uint_t
ngx_http_tokenrefresh_superseded(ngx_http_tokenrefresh_zone_t *zone)
{
    return zone->sh->superseded;
}


/*
 * The upstream rejected the token a request was sent with.  If a newer
 * token is stored already, the request just goes again with it.  If the
 * rejected token is the current one, it is marked so that nobody uses it
 * again, and the next request to look for it starts the one refresh.
 *
 * The loop guard.  A rejection cannot tell a revoked token from an
 * upstream (or one endpoint of it) that rejects every token: a wrong
 * audience, a permission the client lacks.  Only repetition tells, and a
 * success elsewhere proves nothing.  So the refreshes that rejections may
 * start are rationed: a few at once (two revocations in a row recover at
 * once), then one per interval, the interval doubling while rejections
 * keep emptying the ration, back to tokenrefresh_backoff's minimum once it
 * is full again.  Meanwhile the token stays in use, and the rejections
 * reach the clients.
 */

ngx_uint_t
ngx_http_tokenrefresh_reject(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf, ngx_uint_t replay,
    ngx_log_t *log)
{
    int64_t                        age;
    ngx_uint_t                     rc, tokens, dry, young;
    ngx_msec_t                     interval, elapsed;
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    zone = ctx->zone;
    dry = 0;
    young = 0;
    age = 0;
    interval = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&ctx->ref);

    if (node == NULL) {
        rc = NGX_HTTP_TOKENREFRESH_STALE;
        goto done;
    }

    if (replay) {
        node->counters.replays++;

    } else {
        node->counters.replays_refused++;
    }

    if (node->generation != ctx->generation
        || node->rejected == node->generation)
    {
        /* a newer token is there, or on its way */
        rc = NGX_HTTP_TOKENREFRESH_STALE;
        goto done;
    }

    node->counters.rejections++;

    age = ngx_http_tokenrefresh_now() - node->issued;

    if (age < (int64_t) tlcf->min_token_age) {
        rc = NGX_HTTP_TOKENREFRESH_SUSPECT;

        if ((ngx_msec_int_t) (ngx_current_msec - node->young_until) >= 0) {
            node->young_until = ngx_current_msec + tlcf->backoff_min;
            young = 1;
        }

        goto done;
    }

    /* the ration, refilled for the time since the last one taken */

    interval = node->reject_interval ? node->reject_interval
                                     : tlcf->backoff_min;

    if (node->reject_last == 0) {
        tokens = NGX_HTTP_TOKENREFRESH_REJECT_BURST;

    } else {
        elapsed = ngx_current_msec - node->reject_last;
        tokens = ngx_min(NGX_HTTP_TOKENREFRESH_REJECT_BURST,
                         node->reject_tokens + elapsed / interval);

        if (tokens == NGX_HTTP_TOKENREFRESH_REJECT_BURST
            && node->reject_tokens < NGX_HTTP_TOKENREFRESH_REJECT_BURST)
        {
            interval = tlcf->backoff_min;
        }
    }

    if (tokens == 0) {
        rc = NGX_HTTP_TOKENREFRESH_LOOP;
        goto done;
    }

    if (--tokens == 0) {
        interval = ngx_min(2 * interval, tlcf->backoff_max);
        dry = 1;
    }

    node->reject_tokens = tokens;
    node->reject_interval = interval;
    node->reject_last = ngx_current_msec;

    ngx_http_tokenrefresh_write_begin(node);
    node->rejected = node->generation;
    ngx_http_tokenrefresh_write_end(node);

    node->seq++;
    rc = NGX_HTTP_TOKENREFRESH_RENEW;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (dry) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tokenrefresh: the upstream keeps rejecting the tokens "
                      "of credential \"%V\": rejections start a refresh at "
                      "most every %M ms now", &ctx->log_name, interval);
    }

    if (young) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tokenrefresh: the upstream rejected a token of "
                      "credential \"%V\" that is %L ms old, younger than "
                      "tokenrefresh_min_token_age: no refresh for it "
                      "(said once per %M ms)",
                      &ctx->log_name, age, tlcf->backoff_min);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "tokenrefresh: credential \"%V\" generation %ui "
                   "rejected: %ui", &ctx->log_name, ctx->generation, rc);

    return rc;
}


/*
 * The uses the lock-free path counted in a location, added to the node
 * now (a status page, a timer); the node may be gone, then they are lost.
 */

void
ngx_http_tokenrefresh_flush_hits(ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    if (tlcf->hits == 0) {
        return;
    }

    zone = tlcf->shm_zone->data;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&tlcf->fixed);

    if (node) {
        node->counters.requests += tlcf->hits;

        if ((ngx_msec_int_t) (tlcf->hit_time - node->used) > 0) {
            node->used = tlcf->hit_time;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    tlcf->hits = 0;
}


/*
 * A copy of every credential, taken under the lock and reported without
 * it.  The access token is copied for its fingerprint only.
 */

ngx_int_t
ngx_http_tokenrefresh_snapshot(ngx_http_tokenrefresh_zone_t *zone,
    ngx_pool_t *pool, ngx_http_tokenrefresh_zone_info_t *zi)
{
    ngx_queue_t                   *q;
    ngx_http_tokenrefresh_info_t  *ci;
    ngx_http_tokenrefresh_node_t  *tn;

    ngx_shmtx_lock(&zone->shpool->mutex);

    zi->size = zone->shm_zone->shm.size;
    zi->used = zi->size - zone->shpool->pfree * ngx_pagesize;
    zi->count = zone->sh->count;
    zi->evictions = zone->sh->evictions;
    zi->nomem = zone->sh->nomem;
    zi->kept = zone->sh->kept;
    zi->unknown = zone->sh->unknown;
    zi->sessions = zone->sh->sessions;
    zi->sessions_created = zone->sh->sessions_created;
    zi->sessions_refused = zone->sh->sessions_refused;
    zi->sessions_idle = zone->sh->sessions_idle;
    zi->sessions_expired = zone->sh->sessions_expired;
    zi->sessions_logout = zone->sh->sessions_logout;
    zi->sessions_ended = zone->sh->sessions_ended;
    zi->sessions_evicted = zone->sh->sessions_evicted;
    zi->fleet = (zone->redis_addr.len != 0);
    zi->fleet_stats = zone->sh->fleet;
    zi->fleet_stats.up = ngx_http_tokenrefresh_fleet_workers(zone);

    zi->credentials = ngx_array_create(pool, zi->count ? zi->count : 1,
                                       sizeof(ngx_http_tokenrefresh_info_t));
    if (zi->credentials == NULL) {
        goto failed;
    }

    for (q = ngx_queue_head(&zone->sh->lru);
         q != ngx_queue_sentinel(&zone->sh->lru);
         q = ngx_queue_next(q))
    {
        tn = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        /* users' sessions are counted, not listed: there may be many */

        if (tn->session) {
            continue;
        }

        ci = ngx_array_push(zi->credentials);
        if (ci == NULL) {
            goto failed;
        }

        ngx_memzero(ci, sizeof(ngx_http_tokenrefresh_info_t));

        /* a name from client input is shown escaped */

        ci->name.data = ngx_pnalloc(pool, 4 * tn->len);
        if (ci->name.data == NULL) {
            goto failed;
        }

        ci->name.len = ngx_http_tokenrefresh_printable(ci->name.data,
                                                       tn->name, tn->len)
                       - ci->name.data;

        if (tn->access
            && ngx_http_tokenrefresh_copy(pool, &ci->token, tn->access,
                                          tn->access_len)
               != NGX_OK)
        {
            goto failed;
        }

        ci->has_refresh = (tn->refresh != NULL);
        ci->issued = tn->issued;
        ci->expires = tn->expires;
        ci->generation = tn->generation;
        ci->fleet_generation = tn->fleet_gen;
        ci->rejected = (tn->rejected && tn->rejected == tn->generation);

        if (tn->lease_pid
            && (ngx_msec_int_t) (tn->lease_deadline - ngx_current_msec) > 0)
        {
            ci->lease_pid = tn->lease_pid;
            ci->lease_left = tn->lease_deadline - ngx_current_msec;
            ci->lease_grant = tn->lease_grant;
        }

        ci->fails = tn->fails;
        ci->failed = tn->failed;

        if (ngx_http_tokenrefresh_backing_off(tn)) {
            ci->retry_in = tn->retry_at - ngx_current_msec;
        }

        ci->last_outcome = tn->last_outcome;
        ci->last_grant = tn->last_grant;
        ci->last_duration = tn->last_duration;
        ci->last_time = tn->last_time;
        ci->waiting = tn->waiting;
        ci->login = tn->login;
        ci->counters = tn->counters;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;

failed:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_ERROR;
}


/* the caller holds the lock, or nobody else can use the zone yet */

void
ngx_http_tokenrefresh_spend(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest)
{
    ngx_http_tokenrefresh_shctx_t  *sh;

    sh = zone->sh;

    ngx_memcpy(sh->spent[sh->spent_next], digest,
               NGX_HTTP_TOKENREFRESH_DIGEST_LEN);

    sh->spent_next = (sh->spent_next + 1) % NGX_HTTP_TOKENREFRESH_SPENT;

    if (sh->spent_count < NGX_HTTP_TOKENREFRESH_SPENT) {
        sh->spent_count++;
    }
}


ngx_uint_t
ngx_http_tokenrefresh_spent(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest)
{
    ngx_uint_t  i;

    for (i = 0; i < zone->sh->spent_count; i++) {
        if (ngx_memcmp(zone->sh->spent[i], digest,
                       NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
            == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * A credential from the state file when the zone is created, or a seed.
 * What it brings replaces what the credential had.  It never evicts: the
 * credentials already there are as precious as this one.
 */

ngx_int_t
ngx_http_tokenrefresh_restore(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_http_tokenrefresh_token_t *tok,
    ngx_uint_t generation, u_char *seed, ngx_http_tokenrefresh_session_t *ss,
    ngx_log_t *log)
{
    size_t                            size;
    uint32_t                          hash;
    ngx_uint_t                        created;
    ngx_http_tokenrefresh_node_t     *tn;
    ngx_http_tokenrefresh_session_t  *nss;

    if (ss) {
        if (name->len != NGX_HTTP_TOKENREFRESH_DIGEST_LEN) {
            return NGX_ERROR;
        }

        hash = ngx_http_tokenrefresh_digest_key(name->data);

    } else {
        hash = ngx_crc32_short(name->data, name->len);
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    tn = ngx_http_tokenrefresh_lookup(zone, name, hash, ss != NULL);
    created = (tn == NULL);

    if (created) {
        nss = NULL;

        if (ss) {
            size = offsetof(ngx_http_tokenrefresh_session_t, kept)
                   + ss->kept_len;

            nss = ngx_http_tokenrefresh_alloc(zone, size, NULL, 0, log);
            if (nss == NULL) {
                goto nomem;
            }

            ngx_memcpy(nss, ss, size);
        }

        tn = ngx_http_tokenrefresh_create(zone, name, hash, nss, 0, log);
        if (tn == NULL) {
            if (nss) {
                ngx_slab_free_locked(zone->shpool, nss);
            }

            goto nomem;
        }
    }

    if (ngx_http_tokenrefresh_set_tokens(zone, tn, tok, generation, 0, log)
        != NGX_OK)
    {
        /*
         * a node without the tokens it was made for holds nothing, and
         * would only be evicted later, with a warning, for a credential
         * that needs the room
         */

        if (created) {
            ngx_http_tokenrefresh_delete(zone, tn);
        }

        goto nomem;
    }

    if (tok->refresh_token.len) {
        /* a refresh token the provider has not refused yet: try it now */

        tn->fails = 0;
        tn->retry_at = 0;
        tn->failed = 0;
        tn->warned = 0;
    }

    if (seed) {
        ngx_memcpy(tn->seed, seed, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    tn->seq++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;

nomem:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_ERROR;
}


/* a credential undone: the restore of its tokens found no room */

void
ngx_http_tokenrefresh_remove(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_uint_t session)
{
    ngx_http_tokenrefresh_node_t  *tn;

    ngx_shmtx_lock(&zone->shpool->mutex);

    tn = ngx_http_tokenrefresh_node_of(zone, name, session);

    if (tn) {
        ngx_http_tokenrefresh_delete(zone, tn);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* the caller holds the lock, or nobody else can use the zone yet */

ngx_http_tokenrefresh_node_t *
ngx_http_tokenrefresh_node_of(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_uint_t session)
{
    if (session) {
        if (name->len != NGX_HTTP_TOKENREFRESH_DIGEST_LEN) {
            return NULL;
        }

        return ngx_http_tokenrefresh_lookup(zone, name,
                                      ngx_http_tokenrefresh_digest_key(
                                          name->data),
                                      1);
    }

    return ngx_http_tokenrefresh_lookup(zone, name,
                                        ngx_crc32_short(name->data,
                                                        name->len), 0);
}


/*
 * The outcome of a refresh made in the zone this one replaced, taken in
 * under the lock (ngx_http_tokenrefresh_take_over()); the handover lease
 * is released by the caller once the state file has it.
 */

ngx_int_t
ngx_http_tokenrefresh_hand_in(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_http_tokenrefresh_token_t *tok,
    ngx_uint_t outcome, ngx_uint_t grant, u_char *sent)
{
    node->last_outcome = outcome;
    node->last_grant = grant;
    node->last_time = ngx_time();
    node->seq++;

    if (outcome == NGX_HTTP_TOKENREFRESH_REFUSED
        && grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH
        && node->refresh
        && ngx_memcmp(node->refresh_digest, sent,
                      NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
           == 0)
    {
        ngx_slab_free_locked(zone->shpool, node->refresh);
        node->refresh = NULL;
        node->refresh_len = 0;
        ngx_memzero(node->refresh_digest, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    if (tok->access_token.len == 0 && tok->refresh_token.len == 0) {
        return NGX_OK;
    }

    if (ngx_http_tokenrefresh_set_tokens(zone, node, tok,
                                         node->generation + 1,
                                         node->session
                                         ? NGX_HTTP_TOKENREFRESH_EVICT_SESSIONS
                                         : NGX_HTTP_TOKENREFRESH_EVICT_ANY,
                                         zone->shm_zone->shm.log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (tok->access_token.len) {
        node->fails = 0;
        node->retry_at = 0;
        node->fail_status = 0;
        node->failed = 0;
        node->warned = 0;
    }

    return NGX_OK;
}


/* empties a zone that a state file did not fit, before anyone uses it */

void
ngx_http_tokenrefresh_forget_all(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_queue_t                   *q;
    ngx_http_tokenrefresh_node_t  *tn;

    ngx_shmtx_lock(&zone->shpool->mutex);

    while (!ngx_queue_empty(&zone->sh->lru)) {
        q = ngx_queue_head(&zone->sh->lru);
        tn = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);
        ngx_http_tokenrefresh_delete(zone, tn);
    }

    zone->sh->spent_count = 0;
    zone->sh->spent_next = 0;
    zone->sh->gone_count = 0;

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * Seeds: a refresh token from a file, what an operator gets from a
 * one-time login.  A seed applies once: the credential remembers the
 * digest of the last seed it took, and keeps it in the state file, so
 * that after a rotation the successor is used, never the older seed, and
 * a new seed (a new login) replaces whatever the credential had.  A seed
 * the zone saw rotated or refused is never sent.
 */

void
ngx_http_tokenrefresh_seed(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log)
{
    u_char                         digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    uint32_t                       hash;
    ngx_uint_t                     i, used, spent;
    ngx_http_tokenrefresh_node_t  *tn;
    ngx_http_tokenrefresh_seed_t  *seed;
    ngx_http_tokenrefresh_token_t  tok;

    if (zone->seeds == NULL) {
        return;
    }

    seed = zone->seeds->elts;

    for (i = 0; i < zone->seeds->nelts; i++) {

        hash = ngx_crc32_short(seed[i].name.data, seed[i].name.len);
        ngx_http_tokenrefresh_digest(digest, seed[i].token.data,
                                     seed[i].token.len);

        ngx_shmtx_lock(&zone->shpool->mutex);

        tn = ngx_http_tokenrefresh_lookup(zone, &seed[i].name, hash, 0);
        used = (tn && ngx_memcmp(tn->seed, digest,
                                 NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
                      == 0);
        spent = ngx_http_tokenrefresh_spent(zone, digest);

        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (used) {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                           "tokenrefresh: seed \"%V\" of credential \"%V\" "
                           "already applied", &seed[i].file, &seed[i].name);
            continue;
        }

        if (spent) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "tokenrefresh: the seed \"%V\" of credential "
                          "\"%V\" was rotated or refused already and is "
                          "not used", &seed[i].file, &seed[i].name);
            continue;
        }

        ngx_memzero(&tok, sizeof(ngx_http_tokenrefresh_token_t));
        tok.refresh_token = seed[i].token;

        if (ngx_http_tokenrefresh_restore(zone, &seed[i].name, &tok, 0,
                                          digest, NULL, log)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "tokenrefresh: zone \"%V\" has no room for the "
                          "seed of credential \"%V\"",
                          &zone->shm_zone->shm.name, &seed[i].name);
            continue;
        }

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tokenrefresh: credential \"%V\" seeded from \"%V\"",
                      &seed[i].name, &seed[i].file);
    }
}


/*
 * Operator controls.  "refresh" drops the current token and any back-off,
 * so that the next request that needs the credential fetches a new token;
 * "forget" removes the credential with its refresh token, so that the next
 * request logs in.  A credential being refreshed cannot be forgotten.
 */

ngx_int_t
ngx_http_tokenrefresh_control(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_uint_t forget)
{
    ngx_http_tokenrefresh_node_t  *tn;

    ngx_shmtx_lock(&zone->shpool->mutex);

    tn = ngx_http_tokenrefresh_lookup(zone, name,
                                      ngx_crc32_short(name->data, name->len),
                                      0);

    if (tn == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_DECLINED;
    }

    if (!forget) {
        ngx_http_tokenrefresh_write_begin(tn);
        tn->rejected = tn->generation;
        ngx_http_tokenrefresh_write_end(tn);

        tn->fails = 0;
        tn->failed = 0;
        tn->retry_at = 0;
        tn->reject_last = 0;
        tn->reject_interval = 0;
        tn->reject_tokens = 0;
        tn->seq++;

        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_OK;
    }

    if (tn->lease_pid
        && (ngx_msec_int_t) (tn->lease_deadline - ngx_current_msec) > 0)
    {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_BUSY;
    }

    ngx_http_tokenrefresh_delete(zone, tn);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


/*
 * The common case without the lock: a request with a fixed credential name
 * whose node this worker knows, and a valid token outside the refresh-ahead
 * window.  Anything else, or a write seen meanwhile, takes the locked path.
 * It writes nothing into the node (which may have been evicted and its
 * memory reused since it was looked at): its uses are counted in the
 * location and added to the node under the lock.
 */

static ngx_int_t
ngx_http_tokenrefresh_acquire_fast(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf,
    ngx_http_tokenrefresh_acquire_t *res)
{
    u_char                        *access;
    size_t                         len;
    int64_t                        issued, expires;
    ngx_uint_t                     id, generation, rejected;
    ngx_atomic_uint_t              w;
    ngx_http_tokenrefresh_node_t  *node;

    node = tlcf->fixed.node;

    if (node == NULL || ctx->waiting || tlcf->credential->lengths
        || tlcf->hits >= NGX_HTTP_TOKENREFRESH_HITS_FLUSH)
    {
        return NGX_DECLINED;
    }

    id = tlcf->fixed.id;

    w = ngx_http_tokenrefresh_load_acquire(&node->wseq);

    if ((w & 1) || ngx_http_tokenrefresh_load(&node->id) != id) {
        return NGX_DECLINED;
    }

    access = ngx_http_tokenrefresh_load(&node->access);
    len = ngx_http_tokenrefresh_load(&node->access_len);
    issued = ngx_http_tokenrefresh_load(&node->issued);
    expires = ngx_http_tokenrefresh_load(&node->expires);
    generation = ngx_http_tokenrefresh_load(&node->generation);
    rejected = ngx_http_tokenrefresh_load(&node->rejected);

    if (access == NULL || rejected == generation
        || len > ctx->zone->max_token_size
        || (ctx->zone->redis
            && (ngx_http_tokenrefresh_load(&node->fleet_epoch)
                != ctx->zone->sh->fleet.epoch
                || ngx_http_tokenrefresh_load(&node->fleet_gen)
                   < ngx_http_tokenrefresh_load(&node->fleet_news))))
    {
        return NGX_DECLINED;
    }

    if (ngx_http_tokenrefresh_now()
        >= ngx_http_tokenrefresh_refresh_at(issued, expires, tlcf->ahead))
    {
        return NGX_DECLINED;
    }

    if (ngx_http_tokenrefresh_bearer(ctx->request->pool, &res->token, access,
                                     len)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_memory_barrier();

    if (ngx_http_tokenrefresh_load(&node->wseq) != w) {
        return NGX_DECLINED;
    }

    if (tlcf->hits++ == 0) {
        ngx_http_tokenrefresh_arm_flush();
    }

    tlcf->hit_time = ngx_current_msec;

    res->action = NGX_HTTP_TOKENREFRESH_USE;
    res->ref.node = node;
    res->ref.id = id;
    res->seq = 0;
    res->generation = generation;

    return NGX_OK;
}


/* read without the lock: a stale read only delays a wake-up by one tick */

ngx_uint_t
ngx_http_tokenrefresh_changed(ngx_http_tokenrefresh_ctx_t *ctx)
{
    ngx_pid_t                      pid;
    ngx_http_tokenrefresh_node_t  *node;

    node = ctx->ref.node;

    if (ngx_http_tokenrefresh_load(&node->id) != ctx->ref.id
        || ngx_http_tokenrefresh_load(&node->seq) != ctx->seq)
    {
        return 1;
    }

    if (ngx_http_tokenrefresh_load(&node->lease_pid)
        && (ngx_msec_int_t) (ngx_http_tokenrefresh_load(&node->lease_deadline)
                             - ngx_current_msec)
           <= 0)
    {
        /* the lease holder died or hung: someone must take over */
        return 1;
    }

    if (node->handover && ngx_http_tokenrefresh_handed(ctx->zone)) {
        /* the zone this one replaced may have finished its refresh */
        return 1;
    }

    /* a holder that was killed: a look every 100 ms, not every tick */

    pid = ngx_http_tokenrefresh_load(&node->lease_pid);

    if (pid && pid != ngx_pid && ctx->park
        && ngx_current_msec - ctx->park->checked >= 100)
    {
        ctx->park->checked = ngx_current_msec;

        if (!ngx_http_tokenrefresh_alive(pid)) {
            return 1;
        }
    }

    return 0;
}


void
ngx_http_tokenrefresh_account_wait(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_uint_t failed)
{
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    ctx->waited = ngx_current_msec - ctx->wait_start;
    ctx->waiting = 0;

    zone = ctx->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&ctx->ref);

    if (node) {
        if (node->waiting) {
            node->waiting--;
        }

        node->counters.waits++;
        node->counters.wait_msec += ctx->waited;

        if (ctx->waited > node->counters.wait_msec_max) {
            node->counters.wait_msec_max = ctx->waited;
        }

        if (failed) {
            node->counters.failed++;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * A lease ends with its refresh, at its deadline, or when its holder is
 * gone: a worker killed or crashed does not keep the credential waiting
 * until the deadline.  A lease handed over by a zone a reload replaced
 * lasts while the old worker lives: it publishes the outcome, or dies.
 */

static ngx_uint_t
ngx_http_tokenrefresh_lease_free(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_log_t *log)
{
    u_char       name[4 * NGX_HTTP_TOKENREFRESH_MAX_NAME];
    u_char      *last;
    const char  *why;

    if (node->lease_pid == 0) {
        return 1;
    }

    if ((ngx_msec_int_t) (node->lease_deadline - ngx_current_msec) > 0) {

        if (node->lease_pid == ngx_pid
            || ngx_http_tokenrefresh_alive(node->lease_pid))
        {
            return 0;
        }

        why = "is gone";

    } else if (node->handover && ngx_http_tokenrefresh_alive(node->lease_pid))
    {
        node->lease_deadline = ngx_current_msec
                               + NGX_HTTP_TOKENREFRESH_LEASE_MARGIN;
        return 0;

    } else {
        why = "expired";
    }

    last = ngx_http_tokenrefresh_node_label(name, node);

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "tokenrefresh: the lease of worker %P on credential "
                  "\"%*s\" %s, taking over",
                  node->lease_pid, (size_t) (last - name), name, why);

    node->lease_pid = 0;
    ngx_http_tokenrefresh_handover_end(zone, node);

    return 1;
}


/* a worker of this nginx, as far as a signal can tell */

static ngx_uint_t
ngx_http_tokenrefresh_alive(ngx_pid_t pid)
{
    return kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


void
ngx_http_tokenrefresh_handover_end(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node)
{
    if (node->handover) {
        node->handover = 0;
        zone->sh->handovers--;
    }
}


static void
ngx_http_tokenrefresh_take_lease(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_uint_t grant,
    ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    node->lease_pid = ngx_pid;
    node->lease_deadline = ngx_current_msec + tlcf->refresh_timeout
                           + NGX_HTTP_TOKENREFRESH_LEASE_MARGIN;
    node->lease_seq++;
    node->lease_grant = grant;
    ngx_http_tokenrefresh_handover_end(zone, node);
}


static ngx_http_tokenrefresh_node_t *
ngx_http_tokenrefresh_lookup(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, uint32_t hash, ngx_uint_t session)
{
    ngx_int_t                      rc;
    ngx_rbtree_node_t             *node, *sentinel;
    ngx_http_tokenrefresh_node_t  *tn;

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        tn = (ngx_http_tokenrefresh_node_t *) node;

        /*
         * users' sessions and named credentials are two name spaces: a
         * name from a request can never reach a session
         */

        rc = (ngx_int_t) session - (tn->session != NULL);

        if (rc == 0) {
            rc = ngx_memn2cmp(name->data, tn->name, name->len,
                              (size_t) tn->len);
        }

        if (rc == 0) {
            return tn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/*
 * A session is one from the start: the tree orders sessions and named
 * credentials of an equal key by their kind, so the kind must be known
 * when the node is inserted.
 */

static ngx_http_tokenrefresh_node_t *
ngx_http_tokenrefresh_create(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, uint32_t hash, ngx_http_tokenrefresh_session_t *ss,
    ngx_uint_t evict, ngx_log_t *log)
{
    size_t                         size;
    ngx_http_tokenrefresh_node_t  *tn;

    size = offsetof(ngx_http_tokenrefresh_node_t, name) + name->len;

    tn = ngx_http_tokenrefresh_alloc(zone, size, NULL, evict, log);
    if (tn == NULL) {
        return NULL;
    }

    ngx_memzero(tn, size);

    tn->node.key = hash;
    tn->id = ++zone->sh->next_id;
    tn->moved = ngx_current_msec;
    tn->used = tn->moved;
    tn->len = (u_short) name->len;
    ngx_memcpy(tn->name, name->data, name->len);

    if (ss) {
        tn->session = ss;
        zone->sh->sessions++;
    }

    ngx_rbtree_insert(&zone->sh->rbtree, &tn->node);
    ngx_queue_insert_head(&zone->sh->lru, &tn->lru);

    zone->sh->count++;

    return tn;
}


static void *
ngx_http_tokenrefresh_alloc(ngx_http_tokenrefresh_zone_t *zone, size_t size,
    ngx_http_tokenrefresh_node_t *keep, ngx_uint_t evict, ngx_log_t *log)
{
    void  *p;

    for ( ;; ) {
        p = ngx_slab_alloc_locked(zone->shpool, size);

        if (p || !evict) {
            return p;
        }

        if (ngx_http_tokenrefresh_evict(zone, keep, evict, log) == 0) {
            return NULL;
        }
    }
}


/*
 * Evicts the least recently used credential that nobody needs right now
 * and that can be had again: no lease, nobody waiting for it, and not the
 * only copy of a refresh token.  Returns 0 if there is none.
 */

static ngx_uint_t
ngx_http_tokenrefresh_evict(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *keep, ngx_uint_t evict, ngx_log_t *log)
{
    u_char                         name[4 * NGX_HTTP_TOKENREFRESH_MAX_NAME];
    u_char                        *last;
    ngx_uint_t                     n, kept;
    ngx_queue_t                   *q, *prev;
    ngx_http_tokenrefresh_node_t  *tn;

    /*
     * twice round: a credential given its second chance goes to the head
     * and, if every one had it, comes back to the tail as a candidate
     */

    n = 2 * zone->sh->count;
    kept = 0;

    for (q = ngx_queue_last(&zone->sh->lru);
         q != ngx_queue_sentinel(&zone->sh->lru) && n--;
         q = prev)
    {
        prev = ngx_queue_prev(q);
        tn = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        if (tn == keep) {
            continue;
        }

        /* a user's session makes room by evicting sessions only */

        if (evict == NGX_HTTP_TOKENREFRESH_EVICT_SESSIONS
            && tn->session == NULL)
        {
            continue;
        }

        if (ngx_http_tokenrefresh_node_protected(tn)) {
            kept = 1;
            continue;
        }

        /*
         * requests that find a valid token do not take the lock to move
         * it in the queue, they only note the time: a credential used since
         * it was last moved gets a second chance
         */

        if ((ngx_msec_int_t) (tn->used - tn->moved) > 0) {
            ngx_queue_remove(q);
            ngx_queue_insert_head(&zone->sh->lru, q);
            tn->moved = ngx_current_msec;
            tn->used = tn->moved;
            continue;
        }

        if (tn->lease_pid
            && (ngx_msec_int_t) (tn->lease_deadline - ngx_current_msec) > 0)
        {
            continue;
        }

        if ((ngx_msec_int_t) (tn->wait_until - ngx_current_msec) > 0) {
            continue;
        }

        last = ngx_http_tokenrefresh_node_label(name, tn);

        if (tn->session) {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "tokenrefresh: zone \"%V\" is full, ending the "
                          "least recently used session \"%*s\"",
                          &zone->shm_zone->shm.name, (size_t) (last - name),
                          name);

            zone->sh->sessions_evicted++;

        } else {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "tokenrefresh: zone \"%V\" is full, evicting idle "
                          "credential \"%*s\"",
                          &zone->shm_zone->shm.name, (size_t) (last - name),
                          name);
        }

        ngx_http_tokenrefresh_delete(zone, tn);

        zone->sh->evictions++;

        return 1;
    }

    if (kept) {
        zone->sh->kept++;
    }

    return 0;
}


static void
ngx_http_tokenrefresh_delete(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *tn)
{
    /* a stale reference to this node must not match it any more */

    ngx_http_tokenrefresh_write_begin(tn);
    tn->id = 0;
    ngx_http_tokenrefresh_write_end(tn);

    ngx_http_tokenrefresh_handover_end(zone, tn);

    ngx_queue_remove(&tn->lru);
    ngx_rbtree_delete(&zone->sh->rbtree, &tn->node);

    if (tn->access) {
        ngx_slab_free_locked(zone->shpool, tn->access);
    }

    if (tn->refresh) {
        ngx_slab_free_locked(zone->shpool, tn->refresh);
    }

    if (tn->session) {
        ngx_slab_free_locked(zone->shpool, tn->session);
        zone->sh->sessions--;

        /* the next journal record says so: it must not come back */

        if (zone->sh->gone_count < NGX_HTTP_TOKENREFRESH_GONE) {
            ngx_memcpy(zone->sh->gone[zone->sh->gone_count++], tn->name,
                       NGX_HTTP_TOKENREFRESH_DIGEST_LEN);

        } else {
            zone->sh->gone_lost++;
        }
    }

    tn->seq++;

    ngx_slab_free_locked(zone->shpool, tn);

    zone->sh->count--;
}


static void
ngx_http_tokenrefresh_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t             **p;
    ngx_http_tokenrefresh_node_t   *tn, *tnt;

    for ( ;; ) {

        if (node->key < temp->key) {

            p = &temp->left;

        } else if (node->key > temp->key) {

            p = &temp->right;

        } else { /* node->key == temp->key */

            tn = (ngx_http_tokenrefresh_node_t *) node;
            tnt = (ngx_http_tokenrefresh_node_t *) temp;

            if ((tn->session == NULL) != (tnt->session == NULL)) {
                p = (tn->session == NULL) ? &temp->left : &temp->right;

            } else {
                p = (ngx_memn2cmp(tn->name, tnt->name, (size_t) tn->len,
                                  (size_t) tnt->len) < 0)
                    ? &temp->left : &temp->right;
            }
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* one copy serves both $tokenrefresh_authorization and the bare token */

static ngx_int_t
ngx_http_tokenrefresh_bearer(ngx_pool_t *pool, ngx_str_t *dst,
    u_char *access, size_t len)
{
    dst->len = NGX_HTTP_TOKENREFRESH_BEARER_LEN + len;
    dst->data = ngx_pnalloc(pool, dst->len);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(dst->data, NGX_HTTP_TOKENREFRESH_BEARER,
                          NGX_HTTP_TOKENREFRESH_BEARER_LEN),
               access, len);

    return NGX_OK;
}


/* the window also absorbs clock skew, but is never past half-life */

static int64_t
ngx_http_tokenrefresh_refresh_at(int64_t issued, int64_t expires,
    ngx_msec_t ahead)
{
    return expires - ngx_min((int64_t) ahead, (expires - issued) / 2);
}


static ngx_int_t
ngx_http_tokenrefresh_copy(ngx_pool_t *pool, ngx_str_t *dst, u_char *src,
    size_t len)
{
    dst->data = ngx_pnalloc(pool, len);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, len);
    dst->len = len;

    return NGX_OK;
}


/* exponential, capped, with jitter so that workers and nginx instances
 * that failed together do not retry together */

static ngx_msec_t
ngx_http_tokenrefresh_backoff_delay(ngx_uint_t fails, ngx_msec_t min,
    ngx_msec_t max)
{
    ngx_msec_t  delay;

    delay = min;

    while (--fails && delay < max) {
        delay *= 2;
    }

    if (delay > max) {
        delay = max;
    }

    return delay / 2 + (ngx_msec_t) ngx_random() % (delay / 2 + 1);
}
