
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * A reload that changes a zone's size gives it a new shared memory zone:
 * nginx keeps a zone across a reload only if its size is the same.  The
 * old zone is newer than the state file (its workers saved what they had,
 * but may still be refreshing), so the new zone starts as a copy of it,
 * and a refresh still in flight in an old worker hands its outcome over:
 *
 *   - at the zone's init, in the master, the copy is made once to learn
 *     whether it fits: if it does not, the reload is refused, and the old
 *     configuration runs on, having lost nothing;
 *   - at the reload's commit point (init_module: nothing can fail after
 *     it), the copy is made again, from a zone the old workers may have
 *     changed meanwhile, and the old zone is marked superseded: its
 *     workers start no refresh any more, and a lease they hold is copied
 *     as a lease of theirs (a "handover" lease) that the new workers wait
 *     for;
 *   - an old worker settling such a refresh stores it in its own zone, for
 *     its own waiting requests, and publishes it in the channel: a small
 *     zone of a fixed name and size, that every reload keeps, so that old
 *     and new workers share it;
 *   - a new worker that finds a handover lease looks in the channel, takes
 *     the outcome into the new zone, saves the state file, and releases
 *     the lease.  An old worker that dies before publishing leaves a lease
 *     that expires, as any other.
 */


#include "ngx_http_tokenrefresh_module.h"


#define NGX_HTTP_TOKENREFRESH_CHANNEL_SIZE  (1024 * 1024)

/* a published outcome nobody took is dropped after this, in ms */
#define NGX_HTTP_TOKENREFRESH_CHANNEL_TTL   60000


typedef struct {
    ngx_queue_t                       records;
    ngx_atomic_t                      count;
} ngx_http_tokenrefresh_channel_t;


typedef struct {
    ngx_queue_t                       queue;
    ngx_msec_t                        drop_at;
    ngx_pid_t                         pid;
    ngx_uint_t                        lease_seq;
    ngx_uint_t                        outcome;
    ngx_uint_t                        grant;
    int64_t                           issued;
    int64_t                           expires;
    u_char                            sent[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    size_t                            zone_len;
    size_t                            name_len;
    size_t                            access_len;
    size_t                            refresh_len;
    u_char                            data[1];
} ngx_http_tokenrefresh_record_t;


static ngx_int_t ngx_http_tokenrefresh_init_channel(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_tokenrefresh_zone_t *ngx_http_tokenrefresh_old_zone(
    ngx_http_tokenrefresh_zone_t *zone);
static ngx_int_t ngx_http_tokenrefresh_copy_zone(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_zone_t *ozone,
    ngx_log_t *log);
static ngx_int_t ngx_http_tokenrefresh_copy_node(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *on,
    ngx_log_t *log);
static ngx_uint_t ngx_http_tokenrefresh_record_is(
    ngx_http_tokenrefresh_record_t *rec, ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node);


/* the address is the channel's tag, the same in every cycle */
static ngx_uint_t  ngx_http_tokenrefresh_channel_tag;


/*
 * The channel, registered with every zone (nginx gives the same zone to
 * each registration of a name); its name cannot be a zone's, which stops
 * at the first colon.
 */

ngx_shm_zone_t *
ngx_http_tokenrefresh_handover_conf(ngx_conf_t *cf)
{
    ngx_shm_zone_t  *shm_zone;

    static ngx_str_t  name = ngx_string("tokenrefresh:handover");

    shm_zone = ngx_shared_memory_add(cf, &name,
                                     NGX_HTTP_TOKENREFRESH_CHANNEL_SIZE,
                                     &ngx_http_tokenrefresh_channel_tag);
    if (shm_zone == NULL) {
        return NULL;
    }

    shm_zone->init = ngx_http_tokenrefresh_init_channel;

    return shm_zone;
}


static ngx_int_t
ngx_http_tokenrefresh_init_channel(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t                  *shpool;
    ngx_http_tokenrefresh_channel_t  *ch;

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    ch = ngx_slab_alloc(shpool, sizeof(ngx_http_tokenrefresh_channel_t));
    if (ch == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_init(&ch->records);
    ch->count = 0;

    shpool->data = ch;
    shpool->log_nomem = 0;
    shm_zone->data = ch;

    return NGX_OK;
}


/*
 * Called from a new zone's init.  NGX_DECLINED: there is no zone to adopt
 * (a start, or the zone is new), the caller reads the state file.
 */

ngx_int_t
ngx_http_tokenrefresh_adopt(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log)
{
    ngx_http_tokenrefresh_zone_t  *ozone;

    ozone = ngx_http_tokenrefresh_old_zone(zone);

    if (ozone == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_tokenrefresh_copy_zone(zone, ozone, log) != NGX_OK) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "tokenrefresh: zone \"%V\" of %uz bytes cannot hold "
                      "the %ui credentials of the zone it replaces (%uz "
                      "bytes): the reload is refused",
                      &zone->shm_zone->shm.name, zone->shm_zone->shm.size,
                      ozone->sh->count, ozone->shm_zone->shm.size);
        return NGX_ERROR;
    }

    zone->adopted = ozone;

    return NGX_OK;
}


/*
 * The reload's commit point: the copy again (the old workers kept working
 * meanwhile), and from now on the old zone takes no new lease.  Nothing
 * may fail here: a copy that no longer fits keeps what fits, and says so.
 */

void
ngx_http_tokenrefresh_commit(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log)
{
    ngx_uint_t                     count;
    ngx_http_tokenrefresh_zone_t  *ozone;

    ozone = zone->adopted;
    zone->adopted = NULL;

    if (ozone == NULL) {
        return;
    }

    ngx_shmtx_lock(&ozone->shpool->mutex);

    ngx_http_tokenrefresh_forget_all(zone);

    if (ngx_http_tokenrefresh_copy_zone(zone, ozone, log) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "tokenrefresh: zone \"%V\" no longer holds every "
                      "credential of the zone it replaces; some may have "
                      "to log in again", &zone->shm_zone->shm.name);
    }

    ozone->sh->superseded = 1;
    count = zone->sh->count;

    ngx_shmtx_unlock(&ozone->shpool->mutex);

    ngx_http_tokenrefresh_seed(zone, log);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "tokenrefresh: zone \"%V\" resized from %uz to %uz "
                  "bytes, %ui credentials taken from the zone it replaces",
                  &zone->shm_zone->shm.name, ozone->shm_zone->shm.size,
                  zone->shm_zone->shm.size, count);
}


/*
 * The zone of the same name in the running configuration, if there is one
 * and it is not this zone's memory.  During a reload ngx_cycle is still
 * the old cycle, and the master still maps its zones.
 */

static ngx_http_tokenrefresh_zone_t *
ngx_http_tokenrefresh_old_zone(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_shm_zone_t   *shm_zone;

    if (ngx_cycle == NULL || ngx_test_config) {
        return NULL;
    }

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (shm_zone[i].tag != &ngx_http_tokenrefresh_module
            || shm_zone[i].data == NULL
            || shm_zone[i].shm.addr == zone->shm_zone->shm.addr
            || shm_zone[i].shm.name.len != zone->shm_zone->shm.name.len
            || ngx_strncmp(shm_zone[i].shm.name.data,
                           zone->shm_zone->shm.name.data,
                           shm_zone[i].shm.name.len)
               != 0)
        {
            continue;
        }

        if (((ngx_http_tokenrefresh_zone_t *) shm_zone[i].data)->sh == NULL) {
            return NULL;
        }

        return shm_zone[i].data;
    }
}


/* the caller holds the old zone's lock, or nobody else may change it */

static ngx_int_t
ngx_http_tokenrefresh_copy_zone(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_zone_t *ozone, ngx_log_t *log)
{
    ngx_uint_t                      i;
    ngx_queue_t                    *q;
    ngx_http_tokenrefresh_node_t   *on;
    ngx_http_tokenrefresh_shctx_t  *sh, *osh;

    sh = zone->sh;
    osh = ozone->sh;

    /* from the least recently used: each goes to the head of the queue */

    for (q = ngx_queue_last(&osh->lru);
         q != ngx_queue_sentinel(&osh->lru);
         q = ngx_queue_prev(q))
    {
        on = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        if (ngx_http_tokenrefresh_copy_node(zone, on, log) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < osh->spent_count; i++) {
        ngx_memcpy(sh->spent[i], osh->spent[i],
                   NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    sh->spent_count = osh->spent_count;
    sh->spent_next = osh->spent_next;
    sh->evictions = osh->evictions;
    sh->nomem = osh->nomem;
    sh->kept = osh->kept;
    sh->unknown = osh->unknown;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_copy_node(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *on, ngx_log_t *log)
{
    ngx_str_t                      name;
    ngx_http_tokenrefresh_node_t  *tn;
    ngx_http_tokenrefresh_token_t  tok;

    name.data = on->name;
    name.len = on->len;

    ngx_memzero(&tok, sizeof(ngx_http_tokenrefresh_token_t));

    tok.access_token.data = on->access;
    tok.access_token.len = on->access ? on->access_len : 0;
    tok.refresh_token.data = on->refresh;
    tok.refresh_token.len = on->refresh ? on->refresh_len : 0;
    tok.issued = on->issued;
    tok.expires = on->expires;

    if (ngx_http_tokenrefresh_restore(zone, &name, &tok, on->generation,
                                      on->seed, log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the zone is not in use yet: no lock, no lookup by anyone else */

    tn = ngx_http_tokenrefresh_node_of(zone, &name);

    tn->rejected = on->rejected;
    tn->reissued = on->reissued;
    tn->reject_gen = on->reject_gen;
    tn->reject_fails = on->reject_fails;
    tn->reject_until = on->reject_until;
    tn->fails = on->fails;
    tn->retry_at = on->retry_at;
    tn->fail_status = on->fail_status;
    tn->failed = on->failed;
    tn->last_outcome = on->last_outcome;
    tn->last_grant = on->last_grant;
    tn->last_duration = on->last_duration;
    tn->last_time = on->last_time;
    tn->counters = on->counters;
    tn->warned = on->warned;
    tn->login = on->login;

    /* a refresh in flight in an old worker: wait for its outcome */

    if (on->lease_pid
        && (ngx_msec_int_t) (on->lease_deadline - ngx_current_msec) > 0)
    {
        tn->lease_pid = on->lease_pid;
        tn->lease_deadline = on->lease_deadline;
        tn->lease_seq = on->lease_seq;
        tn->lease_grant = on->lease_grant;
        tn->handover = 1;
    }

    return NGX_OK;
}


/*
 * An old worker settled a refresh of a superseded zone: the new zone's
 * workers take its outcome from here.  The tokens are what was stored in
 * the old zone, or nothing (a failure, or an answer nobody could store).
 */

void
ngx_http_tokenrefresh_hand_over(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_http_tokenrefresh_token_t *tok, ngx_uint_t outcome, ngx_log_t *log)
{
    u_char                           *p;
    size_t                            size;
    ngx_str_t                        *zname;
    ngx_slab_pool_t                  *shpool;
    ngx_http_tokenrefresh_record_t   *rec;
    ngx_http_tokenrefresh_channel_t  *ch;

    if (rf->zone->channel == NULL || rf->zone->channel->data == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) rf->zone->channel->shm.addr;
    ch = rf->zone->channel->data;
    zname = &rf->zone->shm_zone->shm.name;

    size = offsetof(ngx_http_tokenrefresh_record_t, data) + zname->len
           + rf->name.len;

    if (tok) {
        size += tok->access_token.len + tok->refresh_token.len;
    }

    ngx_shmtx_lock(&shpool->mutex);

    rec = ngx_slab_alloc_locked(shpool, size);

    if (rec == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: the outcome of the %s of credential "
                      "\"%V\" could not be handed to the resized zone "
                      "\"%V\": it will try again when the lease expires",
                      ngx_http_tokenrefresh_grant_names[rf->grant],
                      &rf->log_name, zname);
        return;
    }

    ngx_memzero(rec, offsetof(ngx_http_tokenrefresh_record_t, data));

    rec->drop_at = ngx_current_msec + NGX_HTTP_TOKENREFRESH_CHANNEL_TTL;
    rec->pid = ngx_pid;
    rec->lease_seq = rf->lease_seq;
    rec->outcome = outcome;
    rec->grant = rf->grant;
    ngx_memcpy(rec->sent, rf->digest, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);

    rec->zone_len = zname->len;
    rec->name_len = rf->name.len;

    p = ngx_cpymem(rec->data, zname->data, zname->len);
    p = ngx_cpymem(p, rf->name.data, rf->name.len);

    if (tok) {
        rec->issued = tok->issued;
        rec->expires = tok->expires;
        rec->access_len = tok->access_token.len;
        rec->refresh_len = tok->refresh_token.len;
        p = ngx_cpymem(p, tok->access_token.data, tok->access_token.len);
        ngx_memcpy(p, tok->refresh_token.data, tok->refresh_token.len);
    }

    ngx_queue_insert_tail(&ch->records, &rec->queue);
    ch->count++;

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "tokenrefresh: the outcome of the %s of credential \"%V\" "
                  "is handed to the resized zone \"%V\"",
                  ngx_http_tokenrefresh_grant_names[rf->grant], &rf->log_name,
                  zname);
}


/* something was handed over, for this zone or another: worth a look */

ngx_uint_t
ngx_http_tokenrefresh_handed(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_http_tokenrefresh_channel_t  *ch;

    if (zone->channel == NULL || zone->channel->data == NULL) {
        return 0;
    }

    ch = zone->channel->data;

    return ch->count != 0;
}


/*
 * A new worker found a credential whose lease an old worker holds: if the
 * outcome was handed over, it is taken in.  The zone's lock is held; the
 * lease stays until the caller has saved the state file.  Returns 1 if
 * something was taken.
 */

ngx_uint_t
ngx_http_tokenrefresh_take_over(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_log_t *log)
{
    u_char                           *p;
    ngx_queue_t                      *q, *next;
    ngx_slab_pool_t                  *shpool;
    ngx_http_tokenrefresh_record_t   *rec, *found;
    ngx_http_tokenrefresh_channel_t  *ch;
    ngx_http_tokenrefresh_token_t     tok;

    if (!ngx_http_tokenrefresh_handed(zone)) {
        return 0;
    }

    shpool = (ngx_slab_pool_t *) zone->channel->shm.addr;
    ch = zone->channel->data;
    found = NULL;

    ngx_shmtx_lock(&shpool->mutex);

    for (q = ngx_queue_head(&ch->records);
         q != ngx_queue_sentinel(&ch->records);
         q = next)
    {
        next = ngx_queue_next(q);
        rec = ngx_queue_data(q, ngx_http_tokenrefresh_record_t, queue);

        if (ngx_http_tokenrefresh_record_is(rec, zone, node)) {
            found = rec;
            ngx_queue_remove(q);
            ch->count--;
            break;
        }

        if ((ngx_msec_int_t) (rec->drop_at - ngx_current_msec) < 0) {
            ngx_queue_remove(q);
            ch->count--;
            ngx_slab_free_locked(shpool, rec);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (found == NULL) {
        return 0;
    }

    rec = found;

    ngx_memzero(&tok, sizeof(ngx_http_tokenrefresh_token_t));

    p = rec->data + rec->zone_len + rec->name_len;

    tok.access_token.data = p;
    tok.access_token.len = rec->access_len;
    tok.refresh_token.data = p + rec->access_len;
    tok.refresh_token.len = rec->refresh_len;
    tok.issued = rec->issued;
    tok.expires = rec->expires;

    /* a seed given meanwhile is newer than what the refresh got */

    if (tok.refresh_token.len
        && ngx_memcmp(node->refresh_digest, rec->sent,
                      NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
           != 0)
    {
        tok.refresh_token.len = 0;
    }

    if (rec->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH
        && (rec->refresh_len
            || rec->outcome == NGX_HTTP_TOKENREFRESH_REFUSED))
    {
        /* rotated or refused: never sent again */
        ngx_http_tokenrefresh_spend(zone, rec->sent);
    }

    if (ngx_http_tokenrefresh_hand_in(zone, node, &tok, rec->outcome,
                                      rec->grant, rec->sent)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: zone \"%V\" has no room for the tokens "
                      "of credential \"%*s\" handed over by the zone it "
                      "replaced", &zone->shm_zone->shm.name,
                      (size_t) rec->name_len, rec->data + rec->zone_len);
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "tokenrefresh: the outcome of a %s in the zone \"%V\" "
                  "replaced by a reload is taken in",
                  ngx_http_tokenrefresh_grant_names[rec->grant],
                  &zone->shm_zone->shm.name);

    ngx_shmtx_lock(&shpool->mutex);
    ngx_slab_free_locked(shpool, rec);
    ngx_shmtx_unlock(&shpool->mutex);

    return 1;
}


static ngx_uint_t
ngx_http_tokenrefresh_record_is(ngx_http_tokenrefresh_record_t *rec,
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node)
{
    ngx_str_t  *zname;

    zname = &zone->shm_zone->shm.name;

    return rec->pid == node->lease_pid
           && rec->lease_seq == node->lease_seq
           && rec->zone_len == zname->len
           && rec->name_len == node->len
           && ngx_memcmp(rec->data, zname->data, zname->len) == 0
           && ngx_memcmp(rec->data + rec->zone_len, node->name, node->len)
              == 0;
}
