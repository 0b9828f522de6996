
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
 *     whether it fits: if what cannot be had again does not (credentials
 *     without a login whose refresh token is their only way back, leases),
 *     the reload is refused, and the old configuration runs on, having
 *     lost nothing; the others are copied as long as they fit;
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

/* how often a full channel is tried again, and drained, in ms */
#define NGX_HTTP_TOKENREFRESH_CHANNEL_RETRY 50

/* outcomes taken in by one drain, at most */
#define NGX_HTTP_TOKENREFRESH_DRAIN_MAX     64


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
    ngx_uint_t                        session;     /* a user's */
    size_t                            name_len;
    size_t                            access_len;
    size_t                            refresh_len;
    u_char                            data[1];
} ngx_http_tokenrefresh_record_t;


/* an outcome an old worker could not publish yet, in its own memory */
typedef struct {
    ngx_queue_t                       queue;
    ngx_shm_zone_t                   *channel;
    size_t                            size;
    ngx_http_tokenrefresh_record_t    rec;
} ngx_http_tokenrefresh_pending_t;


static ngx_int_t ngx_http_tokenrefresh_init_channel(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_tokenrefresh_publish(
    ngx_http_tokenrefresh_pending_t *pd);
static void ngx_http_tokenrefresh_retry(ngx_event_t *ev);
static void ngx_http_tokenrefresh_drain(ngx_event_t *ev);
static void ngx_http_tokenrefresh_drain_zone(
    ngx_http_tokenrefresh_zone_t *zone, ngx_log_t *log);
static void ngx_http_tokenrefresh_take_in(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_http_tokenrefresh_record_t *rec,
    ngx_log_t *log);
static ngx_http_tokenrefresh_zone_t *ngx_http_tokenrefresh_old_zone(
    ngx_http_tokenrefresh_zone_t *zone);
static ngx_int_t ngx_http_tokenrefresh_copy_zone(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_zone_t *ozone,
    ngx_log_t *log);
static ngx_uint_t ngx_http_tokenrefresh_must_keep(
    ngx_http_tokenrefresh_node_t *on);
static ngx_int_t ngx_http_tokenrefresh_copy_node(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *on,
    ngx_log_t *log);
static ngx_uint_t ngx_http_tokenrefresh_record_is(
    ngx_http_tokenrefresh_record_t *rec, ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node);


/* the address is the channel's tag, the same in every cycle */
static ngx_uint_t        ngx_http_tokenrefresh_channel_tag;

static ngx_queue_t       ngx_http_tokenrefresh_pending;
static ngx_event_t       ngx_http_tokenrefresh_retry_event;
static ngx_event_t       ngx_http_tokenrefresh_drain_event;
static ngx_connection_t  ngx_http_tokenrefresh_handover_conn;


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

    if (ngx_http_tokenrefresh_copy_zone(zone, ozone, log) == NGX_ERROR) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "tokenrefresh: zone \"%V\" of %uz bytes cannot hold "
                      "the credentials of the zone it replaces (%uz bytes) "
                      "that hold their only refresh token or a refresh in "
                      "flight: the reload is refused",
                      &zone->shm_zone->shm.name, zone->shm_zone->shm.size,
                      ozone->shm_zone->shm.size);
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
    ngx_int_t                      left;
    ngx_uint_t                     count;
    ngx_http_tokenrefresh_zone_t  *ozone;

    ozone = zone->adopted;
    zone->adopted = NULL;

    if (ozone == NULL) {
        return;
    }

    ngx_shmtx_lock(&ozone->shpool->mutex);

    ngx_http_tokenrefresh_forget_all(zone);

    left = ngx_http_tokenrefresh_copy_zone(zone, ozone, log);

    if (left == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "tokenrefresh: zone \"%V\" no longer holds the "
                      "credentials of the zone it replaces that hold their "
                      "only refresh token: some of them are lost",
                      &zone->shm_zone->shm.name);
    }

    ozone->sh->superseded = 1;
    count = zone->sh->count;

    ngx_shmtx_unlock(&ozone->shpool->mutex);

    ngx_http_tokenrefresh_seed(zone, log);

    if (left > 0) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tokenrefresh: %i credentials that can log in again "
                      "were left out of zone \"%V\": they did not fit",
                      left, &zone->shm_zone->shm.name);
    }

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

/*
 * First what could not be had again: the credentials whose refresh token
 * is their only way back to a token, and those with a refresh in flight;
 * if they do not fit, nothing does.  Then the others, the most recently
 * used first, as long as they fit: they can log in again.  Returns the
 * number of those left out, or NGX_ERROR.
 */

static ngx_int_t
ngx_http_tokenrefresh_copy_zone(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_zone_t *ozone, ngx_log_t *log)
{
    ngx_int_t                       left;
    ngx_uint_t                      i;
    ngx_queue_t                    *q;
    ngx_http_tokenrefresh_node_t   *on, *tn;
    ngx_http_tokenrefresh_shctx_t  *sh, *osh;

    sh = zone->sh;
    osh = ozone->sh;
    left = 0;

    /* from the least recently used: each goes to the head of the queue */

    for (q = ngx_queue_last(&osh->lru);
         q != ngx_queue_sentinel(&osh->lru);
         q = ngx_queue_prev(q))
    {
        on = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        if (ngx_http_tokenrefresh_must_keep(on)
            && ngx_http_tokenrefresh_copy_node(zone, on, log) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /* the most recently used first: each goes to the tail */

    for (q = ngx_queue_head(&osh->lru);
         q != ngx_queue_sentinel(&osh->lru);
         q = ngx_queue_next(q))
    {
        on = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        if (ngx_http_tokenrefresh_must_keep(on)) {
            continue;
        }

        if (ngx_http_tokenrefresh_copy_node(zone, on, log) != NGX_OK) {
            left++;
            continue;
        }

        tn = ngx_queue_data(ngx_queue_head(&sh->lru),
                            ngx_http_tokenrefresh_node_t, lru);

        ngx_queue_remove(&tn->lru);
        ngx_queue_insert_tail(&sh->lru, &tn->lru);
    }

    for (i = 0; i < osh->spent_count; i++) {
        ngx_memcpy(sh->spent[i], osh->spent[i],
                   NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    sh->spent_count = osh->spent_count;
    sh->spent_next = osh->spent_next;

    /* the new zone's frames and snapshots must sort after the old one's */
    sh->journal_seq = ngx_max(sh->journal_seq, osh->journal_seq);
    sh->evictions = osh->evictions + left;
    sh->nomem = osh->nomem;
    sh->kept = osh->kept;
    sh->unknown = osh->unknown;
    sh->access_max = osh->access_max;
    sh->refresh_max = osh->refresh_max;

    return left;
}


static ngx_uint_t
ngx_http_tokenrefresh_must_keep(ngx_http_tokenrefresh_node_t *on)
{
    return ngx_http_tokenrefresh_node_protected(on)
           || (on->lease_pid
               && (ngx_msec_int_t) (on->lease_deadline - ngx_current_msec)
                  > 0);
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
                                      on->seed, on->session, log)
        != NGX_OK)
    {
        /* no half copies: a node without its tokens goes again */
        ngx_http_tokenrefresh_remove(zone, &name, on->session != NULL);
        return NGX_ERROR;
    }

    /* the zone is not in use yet: no lock, no lookup by anyone else */

    tn = ngx_http_tokenrefresh_node_of(zone, &name, on->session != NULL);

    tn->rejected = on->rejected;
    tn->reject_tokens = on->reject_tokens;
    tn->young_until = on->young_until;
    tn->reject_last = on->reject_last;
    tn->reject_interval = on->reject_interval;
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
        zone->sh->handovers++;
    }

    return NGX_OK;
}


/*
 * An old worker settled a refresh of a superseded zone: the new zone's
 * workers take its outcome from the channel.  The tokens are what was
 * stored in the old zone, or nothing (a failure).  A channel without room
 * does not lose it: the worker keeps it and tries again until it fits
 * (the new workers drain the channel), and stays alive meanwhile, so that
 * the new zone's handover lease lasts.
 */

void
ngx_http_tokenrefresh_hand_over(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_http_tokenrefresh_token_t *tok, ngx_uint_t outcome, ngx_log_t *log)
{
    u_char                           *p;
    size_t                            size;
    ngx_str_t                        *zname;
    ngx_http_tokenrefresh_record_t   *rec;
    ngx_http_tokenrefresh_pending_t  *pd;

    if (rf->zone->channel == NULL || rf->zone->channel->data == NULL) {
        return;
    }

    zname = &rf->zone->shm_zone->shm.name;

    size = offsetof(ngx_http_tokenrefresh_record_t, data) + zname->len
           + rf->name.len;

    if (tok) {
        size += tok->access_token.len + tok->refresh_token.len;
    }

    pd = ngx_alloc(offsetof(ngx_http_tokenrefresh_pending_t, rec) + size,
                   log);
    if (pd == NULL) {
        return;
    }

    pd->channel = rf->zone->channel;
    pd->size = size;

    rec = &pd->rec;

    ngx_memzero(rec, offsetof(ngx_http_tokenrefresh_record_t, data));

    rec->pid = ngx_pid;
    rec->lease_seq = rf->lease_seq;
    rec->outcome = outcome;
    rec->grant = rf->grant;
    rec->session = rf->session;
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

    if (ngx_http_tokenrefresh_publish(pd) == NGX_OK) {
        ngx_free(pd);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tokenrefresh: the outcome of the %s of credential "
                      "\"%V\" is handed to the resized zone \"%V\"",
                      ngx_http_tokenrefresh_grant_names[rf->grant],
                      &rf->log_name, zname);
        return;
    }

    ngx_queue_insert_tail(&ngx_http_tokenrefresh_pending, &pd->queue);

    if (!ngx_http_tokenrefresh_retry_event.timer_set) {
        ngx_add_timer(&ngx_http_tokenrefresh_retry_event,
                      NGX_HTTP_TOKENREFRESH_CHANNEL_RETRY);
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "tokenrefresh: the handover zone has no room for the "
                  "outcome of the %s of credential \"%V\" now; it is kept "
                  "until it fits", ngx_http_tokenrefresh_grant_names[rf->grant],
                  &rf->log_name);
}


static ngx_int_t
ngx_http_tokenrefresh_publish(ngx_http_tokenrefresh_pending_t *pd)
{
    ngx_slab_pool_t                  *shpool;
    ngx_http_tokenrefresh_record_t   *rec;
    ngx_http_tokenrefresh_channel_t  *ch;

    shpool = (ngx_slab_pool_t *) pd->channel->shm.addr;
    ch = pd->channel->data;

    ngx_shmtx_lock(&shpool->mutex);

    rec = ngx_slab_alloc_locked(shpool, pd->size);

    if (rec == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_DECLINED;
    }

    ngx_memcpy(rec, &pd->rec, pd->size);
    rec->drop_at = ngx_current_msec + NGX_HTTP_TOKENREFRESH_CHANNEL_TTL;

    ngx_queue_insert_tail(&ch->records, &rec->queue);
    ch->count++;

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


/* not cancelable: an exiting old worker waits until it has handed over */

static void
ngx_http_tokenrefresh_retry(ngx_event_t *ev)
{
    ngx_queue_t                      *q, *next;
    ngx_http_tokenrefresh_pending_t  *pd;

    for (q = ngx_queue_head(&ngx_http_tokenrefresh_pending);
         q != ngx_queue_sentinel(&ngx_http_tokenrefresh_pending);
         q = next)
    {
        next = ngx_queue_next(q);
        pd = ngx_queue_data(q, ngx_http_tokenrefresh_pending_t, queue);

        if (ngx_http_tokenrefresh_publish(pd) == NGX_OK) {
            ngx_queue_remove(q);
            ngx_free(pd);
        }
    }

    if (!ngx_queue_empty(&ngx_http_tokenrefresh_pending)) {
        ngx_add_timer(ev, NGX_HTTP_TOKENREFRESH_CHANNEL_RETRY);
    }
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
    ngx_uint_t                        taken;
    ngx_queue_t                      *q, *next;
    ngx_slab_pool_t                  *shpool;
    ngx_http_tokenrefresh_record_t   *rec;
    ngx_http_tokenrefresh_channel_t  *ch;

    if (!ngx_http_tokenrefresh_handed(zone)) {
        return 0;
    }

    shpool = (ngx_slab_pool_t *) zone->channel->shm.addr;
    ch = zone->channel->data;
    taken = 0;

    ngx_shmtx_lock(&shpool->mutex);

    for (q = ngx_queue_head(&ch->records);
         q != ngx_queue_sentinel(&ch->records);
         q = next)
    {
        next = ngx_queue_next(q);
        rec = ngx_queue_data(q, ngx_http_tokenrefresh_record_t, queue);

        if (ngx_http_tokenrefresh_record_is(rec, zone, node)) {
            ngx_http_tokenrefresh_take_in(zone, node, rec, log);
            taken = 1;

        } else if ((ngx_msec_int_t) (rec->drop_at - ngx_current_msec) >= 0) {
            continue;
        }

        ngx_queue_remove(q);
        ch->count--;
        ngx_slab_free_locked(shpool, rec);

        if (taken) {
            break;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return taken;
}


/*
 * The new workers drain the channel while their zones have handover
 * leases, so that an outcome is taken in even if no request asks for its
 * credential, and the channel has room for the next ones.  The leases are
 * released once the state file has the outcomes.
 */

static void
ngx_http_tokenrefresh_drain(ngx_event_t *ev)
{
    ngx_uint_t                     i, more;
    ngx_list_part_t               *part;
    ngx_shm_zone_t                *shm_zone;
    ngx_http_tokenrefresh_zone_t  *zone;

    more = 0;

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (shm_zone[i].tag != &ngx_http_tokenrefresh_module
            || shm_zone[i].data == NULL)
        {
            continue;
        }

        zone = shm_zone[i].data;

        if (zone->sh && zone->sh->handovers) {
            ngx_http_tokenrefresh_drain_zone(zone, ev->log);
            more |= (zone->sh->handovers != 0);
        }
    }

    if (more && !ngx_exiting && !ngx_terminate) {
        ngx_add_timer(ev, NGX_HTTP_TOKENREFRESH_CHANNEL_RETRY);
    }
}


static void
ngx_http_tokenrefresh_drain_zone(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log)
{
    u_char                           *name;
    ngx_str_t                         key;
    ngx_uint_t                        n, i;
    ngx_queue_t                      *q, *next;
    ngx_slab_pool_t                  *shpool;
    ngx_http_tokenrefresh_ref_t       refs[NGX_HTTP_TOKENREFRESH_DRAIN_MAX];
    ngx_http_tokenrefresh_node_t     *node;
    ngx_http_tokenrefresh_record_t   *rec;
    ngx_http_tokenrefresh_channel_t  *ch;

    if (!ngx_http_tokenrefresh_handed(zone)) {
        return;
    }

    shpool = (ngx_slab_pool_t *) zone->channel->shm.addr;
    ch = zone->channel->data;
    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);
    ngx_shmtx_lock(&shpool->mutex);

    for (q = ngx_queue_head(&ch->records);
         q != ngx_queue_sentinel(&ch->records)
         && n < NGX_HTTP_TOKENREFRESH_DRAIN_MAX;
         q = next)
    {
        next = ngx_queue_next(q);
        rec = ngx_queue_data(q, ngx_http_tokenrefresh_record_t, queue);

        if (rec->zone_len != zone->shm_zone->shm.name.len
            || ngx_memcmp(rec->data, zone->shm_zone->shm.name.data,
                          rec->zone_len)
               != 0)
        {
            /* another zone's: its workers take it, or it expires */

            if ((ngx_msec_int_t) (rec->drop_at - ngx_current_msec) >= 0) {
                continue;
            }

        } else {
            name = rec->data + rec->zone_len;
            key.data = name;
            key.len = rec->name_len;

            node = ngx_http_tokenrefresh_node_of(zone, &key, rec->session);

            /* an outcome nobody waits for any more is dropped */

            if (node && ngx_http_tokenrefresh_record_is(rec, zone, node)) {
                ngx_http_tokenrefresh_take_in(zone, node, rec, log);
                refs[n].node = node;
                refs[n].id = node->id;
                n++;
            }
        }

        ngx_queue_remove(q);
        ch->count--;
        ngx_slab_free_locked(shpool, rec);
    }

    ngx_shmtx_unlock(&shpool->mutex);
    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (n == 0) {
        return;
    }

    /* on disk before the leases end */

    if (zone->state) {
        (void) ngx_http_tokenrefresh_state_save(zone, log);
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (i = 0; i < n; i++) {
        node = ngx_http_tokenrefresh_deref(&refs[i]);

        if (node && node->handover) {
            ngx_http_tokenrefresh_handover_end(zone, node);
            node->lease_pid = 0;
            node->seq++;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_http_tokenrefresh_wake_local();
}


/* an outcome into a node; both locks are held */

static void
ngx_http_tokenrefresh_take_in(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_http_tokenrefresh_record_t *rec,
    ngx_log_t *log)
{
    u_char                         *p;
    ngx_http_tokenrefresh_token_t   tok;

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
}


static ngx_uint_t
ngx_http_tokenrefresh_record_is(ngx_http_tokenrefresh_record_t *rec,
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node)
{
    ngx_str_t  *zname;

    zname = &zone->shm_zone->shm.name;

    return node->handover
           && rec->pid == node->lease_pid
           && rec->lease_seq == node->lease_seq
           && rec->zone_len == zname->len
           && rec->name_len == node->len
           && ngx_memcmp(rec->data, zname->data, zname->len) == 0
           && ngx_memcmp(rec->data + rec->zone_len, node->name, node->len)
              == 0;
}


/* the events of this worker: the retry of old workers, the drain of new */

ngx_int_t
ngx_http_tokenrefresh_init_handover(ngx_cycle_t *cycle)
{
    ngx_event_t  *ev;

    ngx_queue_init(&ngx_http_tokenrefresh_pending);

    ngx_http_tokenrefresh_handover_conn.fd = (ngx_socket_t) -1;

    ev = &ngx_http_tokenrefresh_retry_event;
    ngx_memzero(ev, sizeof(ngx_event_t));
    ev->handler = ngx_http_tokenrefresh_retry;
    ev->data = &ngx_http_tokenrefresh_handover_conn;
    ev->log = cycle->log;

    ev = &ngx_http_tokenrefresh_drain_event;
    ngx_memzero(ev, sizeof(ngx_event_t));
    ev->handler = ngx_http_tokenrefresh_drain;
    ev->data = &ngx_http_tokenrefresh_handover_conn;
    ev->log = cycle->log;
    ev->cancelable = 1;

    /* a zone that a reload just resized may have leases to wait for */

    ngx_add_timer(ev, NGX_HTTP_TOKENREFRESH_CHANNEL_RETRY);

    return NGX_OK;
}
