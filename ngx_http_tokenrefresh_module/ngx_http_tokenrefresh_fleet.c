
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * The fleet: nginx nodes that share a zone's credentials through redis.
 * Each node's shared-memory zone stays its cache, and a request that finds
 * a valid token there never asks redis.  Redis holds, per credential, the
 * fleet's generation, the newest tokens sealed under the zone's key, and
 * the fleet's lease.  A refresh, started by the worker that took this
 * node's lease, asks the fleet first, in one script:
 *
 *   - the fleet has a newer generation than this node: another node
 *     refreshed, its tokens are taken and nothing is sent;
 *   - the lease is free: it is set (SET NX PX, the owner a random value),
 *     for longer than the refresh's hard deadline, and the token call
 *     goes;
 *   - another node holds it: asked again when the fleet announces a new
 *     generation, and at least every 50 ms, until the answer is one of
 *     the above or the refresh's deadline passes.
 *
 * The result is stored by a second script only while the caller still
 * owns the lease (the fence: the provider cannot check one), with the
 * next generation, announced on the zone's channel; the lease is deleted
 * in the same step.  This node's lease is released after that (and after
 * the replicas have it, with redis_replicas=), so that no worker of this
 * node starts from an older state meanwhile.
 *
 * A node checks a token with the fleet (a script that never takes the
 * lease) before it uses one it has not checked since it started, since
 * it subscribed again, or since it heard of a newer generation.  When it
 * connects, it writes back what it holds where the fleet is older.
 *
 * Without redis, a refresh that would send a refresh token waits for it
 * until the deadline: a rotating provider would take a second node's
 * refresh with the same token for a reuse.  Logins (client credentials,
 * passwords, assertions) spend nothing, and run on this node alone.
 *
 * Users' sessions are records of their own, keyed by the hex of their
 * handle's digest: stored at a login, taken in by a node that does not
 * know a handle, ended everywhere by a logout.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <hiredis/hiredis.h>


#define NGX_HTTP_TOKENREFRESH_FLEET_POLL    50

/* the fleet's marker: 16 random bytes in hex; checked this often */
#define NGX_HTTP_TOKENREFRESH_MARKER        32
#define NGX_HTTP_TOKENREFRESH_MARKER_CHECK  500
#define NGX_HTTP_TOKENREFRESH_MARKER_GRACE  1000

/* no lease for this long after a new marker: above the reconnect back-off */
#define NGX_HTTP_TOKENREFRESH_SETTLE_STR    "2500"

/*
 * The record: "TRF1", generation, issued, expires, both tokens, and for a
 * user's session: created, last used, subject, kept values
 */
#define NGX_HTTP_TOKENREFRESH_FLEET_HEAD     (4 + 8 + 8 + 8 + 4 + 4)
#define NGX_HTTP_TOKENREFRESH_FLEET_SESSION                                   \
    (8 + 8 + NGX_HTTP_TOKENREFRESH_DIGEST_LEN + 2)

/* a session's key: the prefix, "slease:", the hex of its digest */
#define NGX_HTTP_TOKENREFRESH_FLEET_KEY                                       \
    (NGX_HTTP_TOKENREFRESH_PREFIX_MAX + sizeof("slease:")                     \
     + 2 * NGX_HTTP_TOKENREFRESH_DIGEST_LEN)

/* how long a store waits for replicas: under the client's 1 s timeout */
#define NGX_HTTP_TOKENREFRESH_FLEET_REPLICAS  500

/* how long a handle the fleet does not know is not asked again */
#define NGX_HTTP_TOKENREFRESH_FLEET_UNKNOWN  1000
#define NGX_HTTP_TOKENREFRESH_FLEET_MISSES   64


/* a script in flight; it may outlive the refresh that sent it */
typedef struct {
    ngx_http_tokenrefresh_refresh_t  *rf;       /* NULL: the refresh ended */
    ngx_http_tokenrefresh_zone_t     *zone;
    ngx_http_tokenrefresh_ref_t       ref;
    ngx_str_t                         lease;    /* the keys, and the owner */
    ngx_str_t                         cred;
    ngx_str_t                         owner;
    ngx_str_t                         log_name;
    ngx_str_t                         name;
    uint32_t                          generation;
    uint32_t                          seen;
    ngx_uint_t                        session;
    ngx_queue_t                       queue;     /* a lease to release */
    void                            (*done)(void *data);
    void                             *data;
} ngx_http_tokenrefresh_fleet_op_t;


/*
 * What this worker knows of the fleet's marker: a random value that the
 * first node to connect sets in redis.  Gone, or another one: redis lost
 * its data (a restart without persistence, a FLUSHALL, an eviction); the
 * nodes write back what they hold, and only then is a new marker set, by
 * a node that wrote something, or by any after a second.
 */

typedef struct {
    ngx_event_t                       check;
    ngx_msec_t                        missing;     /* since when, or 0 */
    ngx_uint_t                        wrote;       /* at the last check */
    ngx_uint_t                        asking;
    size_t                            len;
    u_char                            marker[NGX_HTTP_TOKENREFRESH_MARKER];
    ngx_http_tokenrefresh_zone_t     *zone;
} ngx_http_tokenrefresh_fleet_worker_t;


/* this worker's leases that could not be released: redis was away */
static ngx_queue_t  ngx_http_tokenrefresh_fleet_leases;


/* a record to give back to the fleet */
typedef struct ngx_http_tokenrefresh_fleet_put_s
    ngx_http_tokenrefresh_fleet_put_t;

struct ngx_http_tokenrefresh_fleet_put_s {
    ngx_http_tokenrefresh_fleet_put_t  *next;
    ngx_str_t                           plain;
    ngx_str_t                           key;
    ngx_str_t                           name;
    uint32_t                            generation;
};


static ngx_http_tokenrefresh_fleet_op_t *ngx_http_tokenrefresh_fleet_op(
    ngx_http_tokenrefresh_refresh_t *rf);
static ngx_http_tokenrefresh_fleet_worker_t *
    ngx_http_tokenrefresh_fleet_worker(ngx_http_tokenrefresh_zone_t *zone);
static void ngx_http_tokenrefresh_fleet_check(
    ngx_http_tokenrefresh_zone_t *zone);
static void ngx_http_tokenrefresh_fleet_check_handler(ngx_event_t *ev);
static void ngx_http_tokenrefresh_fleet_marked(void *data, void *reply);
static ngx_uint_t ngx_http_tokenrefresh_fleet_write_back(
    ngx_http_tokenrefresh_zone_t *zone);
static ngx_uint_t ngx_http_tokenrefresh_fleet_spends(
    ngx_http_tokenrefresh_refresh_t *rf);
static ngx_int_t ngx_http_tokenrefresh_fleet_ask(
    ngx_http_tokenrefresh_refresh_t *rf);
static void ngx_http_tokenrefresh_fleet_answer(void *data, void *reply);
static void ngx_http_tokenrefresh_fleet_poll(ngx_event_t *ev);
static void ngx_http_tokenrefresh_fleet_wait(
    ngx_http_tokenrefresh_refresh_t *rf);
static void ngx_http_tokenrefresh_fleet_adopt(
    ngx_http_tokenrefresh_refresh_t *rf, uint32_t generation,
    redisReply *record);
static void ngx_http_tokenrefresh_fleet_checked(
    ngx_http_tokenrefresh_refresh_t *rf, uint32_t generation);
static void ngx_http_tokenrefresh_fleet_done(
    ngx_http_tokenrefresh_refresh_t *rf);
static void ngx_http_tokenrefresh_fleet_stop(
    ngx_http_tokenrefresh_refresh_t *rf, char *why);
static ngx_int_t ngx_http_tokenrefresh_fleet_record(
    ngx_http_tokenrefresh_refresh_t *rf, uint32_t generation,
    ngx_str_t *sealed);
static u_char *ngx_http_tokenrefresh_fleet_key(u_char *p,
    ngx_http_tokenrefresh_zone_t *zone, char *kind, ngx_str_t *name,
    ngx_uint_t session);
static void ngx_http_tokenrefresh_fleet_found(void *data, void *reply);
static ngx_int_t ngx_http_tokenrefresh_fleet_unhex(u_char *hex,
    u_char *digest);
static void ngx_http_tokenrefresh_fleet_ended(
    ngx_http_tokenrefresh_zone_t *zone, u_char *hex);
static int64_t ngx_http_tokenrefresh_fleet_ttl(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_ref_t *ref);
static void ngx_http_tokenrefresh_fleet_unfind(void *data);
static ngx_int_t ngx_http_tokenrefresh_fleet_open(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name, uint32_t generation,
    redisReply *record, ngx_pool_t *pool, ngx_http_tokenrefresh_token_t *tok,
    ngx_http_tokenrefresh_session_t *ss, ngx_str_t *kept);
static ngx_int_t ngx_http_tokenrefresh_fleet_copy(
    ngx_http_tokenrefresh_node_t *node, uint32_t generation,
    ngx_str_t *plain);
static ngx_int_t ngx_http_tokenrefresh_fleet_seal(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name, ngx_str_t *plain,
    ngx_str_t *sealed);
static void ngx_http_tokenrefresh_fleet_put(void *data, void *reply);
static void ngx_http_tokenrefresh_fleet_stored(void *data, void *reply);
static void ngx_http_tokenrefresh_fleet_replicated(void *data, void *reply);
static void ngx_http_tokenrefresh_fleet_unstored(
    ngx_http_tokenrefresh_fleet_op_t *op, ngx_uint_t away);
static void ngx_http_tokenrefresh_fleet_release(
    ngx_http_tokenrefresh_fleet_op_t *op);
static void ngx_http_tokenrefresh_fleet_freed(void *data, void *reply);
static void ngx_http_tokenrefresh_fleet_later(
    ngx_http_tokenrefresh_fleet_op_t *op);
static void ngx_http_tokenrefresh_fleet_release_later(
    ngx_http_tokenrefresh_zone_t *zone);
static void ngx_http_tokenrefresh_fleet_aad(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_str_t *aad, u_char *buf, size_t size);


/*
 * KEYS: the lease, the credential; ARGV: the owner, the lease's time in ms,
 * this node's generation, "1" for a check only or "2" for no lease (a
 * holder was seen, and its lease would still run), the fleet's marker as
 * this node knows it; KEYS[3]: the marker, KEYS[4]: "settling", set for a
 * while after redis lost its data, so that the nodes whose refreshes were
 * in flight claim their leases again first.  { 4 }: the marker is not that one
 * (redis lost its data, and the nodes are giving it back what they hold);
 * { 1, generation, record }:
 * the fleet's is newer; { 3, generation }: it is not (a check); { 0,
 * generation }: the lease is the caller's; { 2, generation }: another node
 * holds it.
 */

static const char  ngx_http_tokenrefresh_fleet_ask_script[] =
    "if redis.call('GET', KEYS[3]) ~= ARGV[5] then return {4, 0} end "
    "local g = tonumber(redis.call('HGET', KEYS[2], 'g') or '0') "
    "if g > tonumber(ARGV[3]) then "
    "  return {1, g, redis.call('HGET', KEYS[2], 'r')} "
    "end "
    "if ARGV[4] == '1' then return {3, g} end "
    "if ARGV[4] == '2' or redis.call('EXISTS', KEYS[4]) == 1 then "
    "  return {2, g, -1} "
    "end "
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
    "  return {0, g} "
    "end "
    "return {2, g, redis.call('PTTL', KEYS[1])}";


/*
 * KEYS: the lease, the credential; ARGV: the owner, the generation the
 * lease was taken at, the new one, the record, the channel and the name to
 * announce it with (no channel: not announced), a time to live in ms (0:
 * none).  1: stored; -1: the lease
 * is not the caller's (it expired, or redis lost it): that is the fence;
 * -2: the fleet has as new a generation already (a node gave back what
 * it held while redis was away).  The caller's lease is gone after it.
 */

static const char  ngx_http_tokenrefresh_fleet_store_script[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end "
    "redis.call('DEL', KEYS[1]) "
    "if tonumber(redis.call('HGET', KEYS[2], 'g') or '0') "
    "   >= tonumber(ARGV[3]) then return -2 end "
    "redis.call('HSET', KEYS[2], 'g', ARGV[3], 'r', ARGV[4]) "
    "if ARGV[5] ~= '' then "
    "  redis.call('PUBLISH', ARGV[5], ARGV[3] .. ' ' .. ARGV[6]) "
    "end "
    "if tonumber(ARGV[7]) > 0 then "
    "  redis.call('PEXPIRE', KEYS[2], ARGV[7]) "
    "end "
    "return 1";


/*
 * KEYS: the credential; ARGV: a generation, its record, the channel and
 * the name (no channel: not announced), a time to live in ms (0: none).
 * Stored only over an older generation: the highest wins.
 */

static const char  ngx_http_tokenrefresh_fleet_put_script[] =
    "if tonumber(redis.call('HGET', KEYS[1], 'g') or '0') "
    "   < tonumber(ARGV[1]) then "
    "  redis.call('HSET', KEYS[1], 'g', ARGV[1], 'r', ARGV[2]) "
    "  if ARGV[3] ~= '' then "
    "    redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. ARGV[4]) "
    "  end "
    "  if tonumber(ARGV[5]) > 0 then "
    "    redis.call('PEXPIRE', KEYS[1], ARGV[5]) "
    "  end "
    "  return 1 "
    "end "
    "return 0";


/* KEYS: a session; ARGV: the channel, "- <hex of its digest>" */

static const char  ngx_http_tokenrefresh_fleet_gone_script[] =
    "redis.call('DEL', KEYS[1]) "
    "redis.call('PUBLISH', ARGV[1], ARGV[2]) "
    "return 1";


/* KEYS: a session */

static const char  ngx_http_tokenrefresh_fleet_find_script[] =
    "return redis.call('HMGET', KEYS[1], 'g', 'r')";


/*
 * KEYS: the lease; ARGV: the owner, the channel and the name to say it on
 * (as generation 0: the lease is free).  Compare and delete.
 */

static const char  ngx_http_tokenrefresh_fleet_release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "  redis.call('DEL', KEYS[1]) "
    "  if ARGV[2] ~= '' then "
    "    redis.call('PUBLISH', ARGV[2], '0 ' .. ARGV[3]) "
    "  end "
    "  return 1 "
    "end "
    "return 0";


/*
 * Called instead of sending the token request: NGX_DECLINED if the fleet
 * has no say (no redis, a user's session), NGX_OK if the fleet was asked
 * and the request is sent, or not, when it answers.
 */

ngx_int_t
ngx_http_tokenrefresh_fleet_lease(ngx_http_tokenrefresh_refresh_t *rf)
{
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    zone = rf->zone;

    if (zone->redis == NULL) {
        return NGX_DECLINED;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&rf->ref);
    rf->fleet_known = node ? node->fleet_gen : 0;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    /* unique in the fleet: this host, this worker, 64 random bits */

    rf->owner_len = ngx_snprintf(rf->owner, sizeof(rf->owner),
                                 "%V:%P:%ui:%08xD%08xD",
                                 &ngx_cycle->hostname, ngx_pid,
                                 rf->lease_seq, (uint32_t) ngx_random(),
                                 (uint32_t) ngx_random())
                    - rf->owner;

    rf->fleet_waiting = 1;

    rf->fleet_poll.handler = ngx_http_tokenrefresh_fleet_poll;
    rf->fleet_poll.data = rf;
    rf->fleet_poll.log = rf->parent->connection->log;
    rf->fleet_poll.cancelable = 1;

    if (ngx_http_tokenrefresh_fleet_ask(rf) == NGX_OK) {
        return NGX_OK;
    }

    if (rf->fleet_sync) {
        /* redis away: the token is good, and used; settled from a timer */
        ngx_add_timer(&rf->fleet_poll, 1);
        return NGX_OK;
    }

    if (!ngx_http_tokenrefresh_fleet_spends(rf)) {

        /* a login spends nothing: this node does it alone */

        rf->fleet_waiting = 0;
        (void) ngx_atomic_fetch_add(&zone->sh->fleet.fallbacks, 1);

        return NGX_DECLINED;
    }

    ngx_http_tokenrefresh_fleet_wait(rf);

    return NGX_OK;
}


/*
 * Whether the refresh may spend what a second node's refresh would spend
 * again: a refresh token, unless the provider does not rotate them
 * (tokenrefresh_rotating off).  A login spends nothing.
 */

static ngx_uint_t
ngx_http_tokenrefresh_fleet_spends(ngx_http_tokenrefresh_refresh_t *rf)
{
    return rf->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH
           && rf->lcf->rotating;
}


static ngx_int_t
ngx_http_tokenrefresh_fleet_ask(ngx_http_tokenrefresh_refresh_t *rf)
{
    u_char                            px[NGX_INT_T_LEN], known[NGX_INT_T_LEN];
    ngx_msec_t                        left;
    ngx_str_t                         args[9];
    ngx_http_tokenrefresh_fleet_op_t *op;
    ngx_http_tokenrefresh_fleet_worker_t  *fw;

    fw = ngx_http_tokenrefresh_fleet_worker(rf->zone);
    if (fw == NULL) {
        return NGX_ERROR;
    }

    op = ngx_http_tokenrefresh_fleet_op(rf);
    if (op == NULL) {
        return NGX_ERROR;
    }

    /*
     * The lease outlives what is left of the refresh's deadline: the token
     * call is cut before anyone else may take the lease
     */

    left = rf->deadline.timer_set
           ? (ngx_msec_t) ((ngx_msec_int_t) (rf->deadline.timer.key
                                             - ngx_current_msec))
           : rf->lcf->refresh_timeout;

    args[0] = op->lease;
    args[1] = op->cred;
    args[2] = rf->zone->redis_marker;
    args[3] = rf->zone->redis_settling;
    args[4] = op->owner;
    args[5].data = px;
    args[5].len = ngx_sprintf(px, "%M",
                              left + NGX_HTTP_TOKENREFRESH_LEASE_MARGIN)
                  - px;
    args[6].data = known;
    args[6].len = ngx_sprintf(known, "%uD", rf->fleet_known) - known;

    /*
     * a holder seen earlier keeps its lease until it would have expired,
     * even if redis lost it meanwhile: only news, or the holder letting it
     * go, frees it for this node
     */

    args[7].data = (u_char *) (rf->fleet_sync ? "1"
                               : (rf->fleet_held_until
                                  && (ngx_msec_int_t) (rf->fleet_held_until
                                                       - ngx_current_msec)
                                     > 0)
                               ? "2" : "0");
    args[7].len = 1;
    args[8].data = fw->marker;
    args[8].len = fw->len;

    rf->fleet_epoch = (uint32_t) rf->zone->sh->fleet.epoch;

    if (ngx_http_tokenrefresh_redis_eval(rf->zone,
                                    ngx_http_tokenrefresh_fleet_ask_script,
                                    4, args, 9,
                                    ngx_http_tokenrefresh_fleet_answer, op)
        != NGX_OK)
    {
        ngx_free(op);
        return NGX_DECLINED;
    }

    rf->fleet = op;

    return NGX_OK;
}


static void
ngx_http_tokenrefresh_fleet_answer(void *data, void *r)
{
    ngx_http_tokenrefresh_fleet_op_t *op = data;

    uint32_t                          g;
    ngx_int_t                         code;
    redisReply                       *reply = r;
    ngx_http_tokenrefresh_zone_t     *zone;
    ngx_http_tokenrefresh_refresh_t  *rf;

    rf = op->rf;
    zone = op->zone;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 2
        || reply->element[0]->type != REDIS_REPLY_INTEGER
        || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        code = -1;
        g = 0;

    } else {
        code = (ngx_int_t) reply->element[0]->integer;
        g = (uint32_t) reply->element[1]->integer;
    }

    if (rf == NULL) {

        /* the refresh ended meanwhile: a lease it got goes at once */

        if (code == 0) {
            ngx_http_tokenrefresh_fleet_release(op);
            return;
        }

        ngx_free(op);
        return;
    }

    rf->fleet = NULL;

    switch (code) {

    case 0:
        rf->fleet_lease = 1;
        rf->fleet_waiting = 0;
        rf->fleet_seen = g;
        ngx_free(op);

        (void) ngx_atomic_fetch_add(&zone->sh->fleet.leases, 1);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rf->fleet_poll.log, 0,
                       "tokenrefresh: fleet lease of credential \"%V\" "
                       "taken at generation %uD", &rf->log_name, g);

        ngx_post_event(&rf->run, &ngx_posted_events);
        return;

    case 1:
        ngx_free(op);

        if (reply->elements < 3
            || reply->element[2]->type != REDIS_REPLY_STRING)
        {
            ngx_http_tokenrefresh_fleet_stop(rf, "the fleet's record of it "
                                             "is missing");
            return;
        }

        ngx_http_tokenrefresh_fleet_adopt(rf, g, reply->element[2]);
        return;

    case 3:
        ngx_free(op);
        ngx_http_tokenrefresh_fleet_checked(rf, g);
        return;

    case 4:
        ngx_free(op);

        /*
         * redis lost its data: nothing is refreshed until the nodes that
         * hold the newest tokens have given them back (a node restarted
         * from an old state file would send a spent refresh token); a
         * check uses the token it has
         */

        if (rf->fleet_sync) {
            ngx_http_tokenrefresh_fleet_done(rf);
            return;
        }

        ngx_http_tokenrefresh_fleet_check(zone);
        ngx_add_timer(&rf->fleet_poll, NGX_HTTP_TOKENREFRESH_FLEET_POLL);
        return;

    case 2:
        ngx_free(op);

        if (!rf->fleet_held) {
            rf->fleet_held = 1;
            (void) ngx_atomic_fetch_add(&zone->sh->fleet.waits, 1);
        }

        if (reply->elements > 2
            && reply->element[2]->type == REDIS_REPLY_INTEGER
            && reply->element[2]->integer > 0)
        {
            rf->fleet_held_until = ngx_current_msec
                                   + (ngx_msec_t) reply->element[2]->integer;
        }

        /* another node refreshes it: asked again, until the deadline */

        ngx_add_timer(&rf->fleet_poll, rf->fleet_again
                                       ? 1 : NGX_HTTP_TOKENREFRESH_FLEET_POLL);
        rf->fleet_again = 0;
        return;

    default:
        ngx_free(op);

        if (rf->fleet_sync) {
            ngx_http_tokenrefresh_fleet_done(rf);
            return;
        }

        if (!ngx_http_tokenrefresh_fleet_spends(rf)) {
            rf->fleet_waiting = 0;
            (void) ngx_atomic_fetch_add(&zone->sh->fleet.fallbacks, 1);
            ngx_post_event(&rf->run, &ngx_posted_events);
            return;
        }

        ngx_http_tokenrefresh_fleet_wait(rf);
        return;
    }
}


/* redis is away: a refresh token is not sent until it is back */

static void
ngx_http_tokenrefresh_fleet_wait(ngx_http_tokenrefresh_refresh_t *rf)
{
    if (rf->fleet_sync) {
        /* only a check: the token is good, and used */
        ngx_http_tokenrefresh_fleet_done(rf);
        return;
    }

    if (!rf->fleet_away) {
        rf->fleet_away = 1;
        (void) ngx_atomic_fetch_add(&rf->zone->sh->fleet.away, 1);

        ngx_log_error(NGX_LOG_WARN, rf->fleet_poll.log, 0,
                      "tokenrefresh: refresh of credential \"%V\" waits for "
                      "the fleet's redis: a refresh token is not sent "
                      "without the fleet's lease", &rf->log_name);
    }

    ngx_add_timer(&rf->fleet_poll, NGX_HTTP_TOKENREFRESH_FLEET_POLL);
}


static void
ngx_http_tokenrefresh_fleet_poll(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_refresh_t *rf = ev->data;

    if (rf->done) {
        return;
    }

    if (ngx_http_tokenrefresh_fleet_ask(rf) != NGX_OK) {
        ngx_http_tokenrefresh_fleet_wait(rf);
    }
}


/* another node refreshed: its tokens are taken, nothing is sent */

static void
ngx_http_tokenrefresh_fleet_adopt(ngx_http_tokenrefresh_refresh_t *rf,
    uint32_t generation, redisReply *record)
{
    u_char                          buf[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    size_t                          alen, rlen;
    ngx_int_t                       rc;
    ngx_uint_t                      same;
    ngx_http_tokenrefresh_node_t   *node;
    ngx_http_tokenrefresh_zone_t   *zone;
    ngx_http_tokenrefresh_token_t   tok;

    zone = rf->zone;

    rc = ngx_http_tokenrefresh_fleet_open(zone, &rf->name, generation, record,
                                          rf->parent->pool, &tok, NULL, NULL);

    if (rc == NGX_ERROR) {
        ngx_http_tokenrefresh_fleet_stop(rf, "no memory");
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, rf->fleet_poll.log, 0,
                      "tokenrefresh: the fleet's record of credential \"%V\" "
                      "cannot be opened: is the key of zone \"%V\" the same "
                      "on every node?", &rf->log_name,
                      &zone->shm_zone->shm.name);

        ngx_http_tokenrefresh_fleet_stop(rf, "the fleet's record of it "
                                         "cannot be opened");
        return;
    }

    alen = tok.access_token.len;

    /*
     * This node has these tokens already, and did not know it (it started
     * from its state file): if its token is still good, there is nothing
     * to do; if not, it asks again, now at the fleet's generation
     */

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&rf->ref);

    same = (node && node->access && node->access_len == alen
            && ngx_memcmp(node->access, tok.access_token.data, alen) == 0);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (same) {
        ngx_explicit_memzero(tok.access_token.data,
                             alen + tok.refresh_token.len);
        rf->fleet_known = generation;
        ngx_http_tokenrefresh_fleet_checked(rf, generation);
        return;
    }

    rlen = tok.refresh_token.len;

    if (rlen) {
        ngx_http_tokenrefresh_digest(buf, tok.refresh_token.data, rlen);

        if (ngx_memcmp(buf, rf->digest, NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
            == 0)
        {
            /* the same refresh token: nothing was rotated, nothing spent */
            tok.refresh_token.len = 0;
        }
    }

    rf->fleet_adopt = 1;
    rf->fleet_waiting = 0;

    (void) ngx_atomic_fetch_add(&zone->sh->fleet.adopted, 1);

    ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_OK, &tok, NULL,
                                 rf->fleet_poll.log);

    ngx_http_tokenrefresh_fleet_synced(zone, &rf->ref, generation,
                                       rf->fleet_epoch);

    ngx_explicit_memzero(tok.access_token.data, alen + rlen);

    ngx_log_error(NGX_LOG_INFO, rf->fleet_poll.log, 0,
                  "tokenrefresh: credential \"%V\" took the fleet's "
                  "generation %uD: another node refreshed it",
                  &rf->log_name, generation);

    ngx_http_tokenrefresh_task_stop(rf->parent);
}


/*
 * A check found nothing newer in the fleet: a good token is used on; one
 * that went bad meanwhile is refreshed, the lease asked for
 */

static void
ngx_http_tokenrefresh_fleet_checked(ngx_http_tokenrefresh_refresh_t *rf,
    uint32_t generation)
{
    ngx_uint_t                     good;
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    zone = rf->zone;

    ngx_http_tokenrefresh_fleet_synced(zone, &rf->ref, generation,
                                       rf->fleet_epoch);

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&rf->ref);
    good = (node && node->access && node->rejected != node->generation
            && ngx_http_tokenrefresh_now() < node->expires);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (good) {
        ngx_http_tokenrefresh_fleet_done(rf);
        return;
    }

    rf->fleet_sync = 0;

    if (ngx_http_tokenrefresh_fleet_ask(rf) != NGX_OK) {
        ngx_http_tokenrefresh_fleet_wait(rf);
    }
}


/* nothing to send, nothing to store: the waiting requests go on */

static void
ngx_http_tokenrefresh_fleet_done(ngx_http_tokenrefresh_refresh_t *rf)
{
    rf->fleet_waiting = 0;

    ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_OK, NULL, NULL,
                                 rf->fleet_poll.log);
    ngx_http_tokenrefresh_task_stop(rf->parent);
}


/* news of the credential: a waiting refresh asks at once, not in 50 ms */

void
ngx_http_tokenrefresh_fleet_poke(ngx_http_tokenrefresh_refresh_t *rf)
{
    if (rf->fleet_poll.timer_set) {
        ngx_del_timer(&rf->fleet_poll);
        ngx_http_tokenrefresh_fleet_poll(&rf->fleet_poll);
        return;
    }

    /* an ask in flight may have been answered before the news: again */
    rf->fleet_again = 1;
}


/*
 * A message on the zone's channel: "<generation> <name>".  A node that
 * holds the credential notes that the fleet has newer tokens, so that the
 * next request checks first; a refresh of this worker waiting for it asks
 * now.
 */

void
ngx_http_tokenrefresh_fleet_message(ngx_http_tokenrefresh_zone_t *zone,
    void *r)
{
    u_char      *p, *last, digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    uint32_t     g;
    ngx_str_t    name;
    ngx_int_t    n;
    ngx_uint_t   session;
    redisReply  *reply = r;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 3
        || reply->element[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    p = (u_char *) reply->element[2]->str;
    last = p + reply->element[2]->len;

    if (last - p == 2 + 2 * NGX_HTTP_TOKENREFRESH_DIGEST_LEN
        && p[0] == '-' && p[1] == ' ')
    {
        ngx_http_tokenrefresh_fleet_ended(zone, p + 2);
        return;
    }

    name.data = ngx_strlchr(p, last, ' ');
    if (name.data == NULL) {
        return;
    }

    n = ngx_atoi(p, name.data - p);
    if (n == NGX_ERROR || n > 0xffffffff) {
        return;
    }

    g = (uint32_t) n;
    name.data++;
    name.len = last - name.data;

    (void) ngx_atomic_fetch_add(&zone->sh->fleet.news, 1);

    /* a user's session: "s:<hex of its digest>" */

    session = (name.len == 2 + 2 * NGX_HTTP_TOKENREFRESH_DIGEST_LEN
               && name.data[0] == 's' && name.data[1] == ':');

    if (session) {
        if (ngx_http_tokenrefresh_fleet_unhex(name.data + 2, digest)
            != NGX_OK)
        {
            return;
        }

        name.data = digest;
        name.len = NGX_HTTP_TOKENREFRESH_DIGEST_LEN;
    }

    if (g == 0) {
        /* a holder let its lease go without a result: it is free */
        ngx_http_tokenrefresh_fleet_pokes(zone, &name, 1);
        return;
    }

    if (ngx_http_tokenrefresh_fleet_heard(zone, &name, g, session)
        == NGX_OK)
    {
        ngx_http_tokenrefresh_fleet_pokes(zone, &name, 0);
    }
}


/* the digest of a session, from its hex in a message */

static ngx_int_t
ngx_http_tokenrefresh_fleet_unhex(u_char *hex, u_char *digest)
{
    ngx_int_t   n;
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_TOKENREFRESH_DIGEST_LEN; i++) {
        n = ngx_hextoi(&hex[2 * i], 2);

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        digest[i] = (u_char) n;
    }

    return NGX_OK;
}


/* a session ended on another node: it ends here too */

static void
ngx_http_tokenrefresh_fleet_ended(ngx_http_tokenrefresh_zone_t *zone,
    u_char *hex)
{
    u_char     digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    ngx_str_t  rt, kept;

    if (ngx_http_tokenrefresh_fleet_unhex(hex, digest) != NGX_OK) {
        return;
    }

    if (ngx_http_tokenrefresh_session_end(zone, digest, NULL, &rt, &kept)
        != NGX_OK)
    {
        return;
    }

    if (zone->state) {
        (void) ngx_http_tokenrefresh_journal_put(zone, NULL, 1, NULL, NULL,
                                                 NULL, ngx_cycle->log);
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "tokenrefresh: session:%*xs ended on another node",
                  (size_t) 4, digest);
}


/* the fleet did not let the refresh start: it ends without a token call */

static void
ngx_http_tokenrefresh_fleet_stop(ngx_http_tokenrefresh_refresh_t *rf,
    char *why)
{
    ngx_str_t  reason;

    reason.data = (u_char *) why;
    reason.len = ngx_strlen(why);

    rf->fleet_away = 1;

    ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_ABORTED, NULL,
                                 &reason, rf->fleet_poll.log);
    ngx_http_tokenrefresh_task_stop(rf->parent);
}


/*
 * The refresh is settled: its result goes to the fleet, with the lease, if
 * "share" (new tokens were stored) and the lease is still the caller's;
 * the lease is released otherwise.  NGX_OK: done(data), if any, runs once
 * the fleet answered; NGX_DECLINED: nothing to wait for.
 */

ngx_int_t
ngx_http_tokenrefresh_fleet_settle(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_uint_t share, void (*done)(void *data), void *data)
{
    uint32_t                          g;
    ngx_str_t                         args[9], sealed;
    ngx_http_tokenrefresh_fleet_op_t *op;
    u_char                            seen[NGX_INT_T_LEN],
                                      next[NGX_INT_T_LEN],
                                      ttl[NGX_INT64_LEN],
                                      hex[NGX_HTTP_TOKENREFRESH_LABEL_LEN];

    if (rf->fleet_poll.timer_set) {
        ngx_del_timer(&rf->fleet_poll);
    }

    if (rf->fleet) {
        /* an answer still due finds no refresh, and frees its lease */
        ((ngx_http_tokenrefresh_fleet_op_t *) rf->fleet)->rf = NULL;
        rf->fleet = NULL;
    }

    if (!rf->fleet_lease) {
        return NGX_DECLINED;
    }

    rf->fleet_lease = 0;

    op = ngx_http_tokenrefresh_fleet_op(rf);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    if (!share) {
        ngx_http_tokenrefresh_fleet_release(op);
        return NGX_DECLINED;
    }

    g = ngx_max(rf->fleet_seen, rf->fleet_known) + 1;

    if (ngx_http_tokenrefresh_fleet_record(rf, g, &sealed) != NGX_OK) {
        ngx_http_tokenrefresh_fleet_release(op);
        return NGX_DECLINED;
    }

    op->rf = NULL;
    op->generation = g;
    op->seen = rf->fleet_seen;
    op->done = done;
    op->data = data;

    args[0] = op->lease;
    args[1] = op->cred;
    args[2] = op->owner;
    args[3].data = seen;
    args[3].len = ngx_sprintf(seen, "%uD", rf->fleet_seen) - seen;
    args[4].data = next;
    args[4].len = ngx_sprintf(next, "%uD", g) - next;
    args[5] = sealed;
    args[6] = rf->zone->redis_channel;
    args[7] = rf->name;
    args[8].data = ttl;
    args[8].len = ngx_sprintf(ttl, "%L",
                              ngx_http_tokenrefresh_fleet_ttl(rf->zone,
                                                              &rf->ref))
                  - ttl;

    if (rf->session) {
        /* a session is announced by the hex of its digest: "s:<hex>" */
        args[7].data = hex;
        args[7].len = ngx_hex_dump(ngx_cpymem(hex, "s:", 2), rf->name.data,
                                   rf->name.len)
                      - hex;
    }

    if (ngx_http_tokenrefresh_redis_eval(rf->zone,
                                    ngx_http_tokenrefresh_fleet_store_script,
                                    2, args, 9,
                                    ngx_http_tokenrefresh_fleet_stored, op)
        != NGX_OK)
    {
        ngx_free(sealed.data);
        ngx_http_tokenrefresh_fleet_unstored(op, 1);
        ngx_http_tokenrefresh_fleet_later(op);

        (void) ngx_atomic_fetch_add(&rf->zone->sh->fleet.fenced, 1);

        ngx_log_error(NGX_LOG_ERR, rf->fleet_poll.log, 0,
                      "tokenrefresh: the new tokens of credential \"%V\" "
                      "could not be given to the fleet (redis is away); "
                      "this node keeps them", &rf->log_name);

        return NGX_DECLINED;
    }

    ngx_free(sealed.data);

    return NGX_OK;
}


static void
ngx_http_tokenrefresh_fleet_stored(void *data, void *r)
{
    ngx_http_tokenrefresh_fleet_op_t *op = data;

    ngx_int_t                      rc;
    redisReply                    *reply = r;
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    zone = op->zone;

    rc = (reply && reply->type == REDIS_REPLY_INTEGER)
         ? (ngx_int_t) reply->integer : 0;

    if (rc == 1) {
        (void) ngx_atomic_fetch_add(&zone->sh->fleet.stored, 1);

        ngx_shmtx_lock(&zone->shpool->mutex);

        node = ngx_http_tokenrefresh_deref(&op->ref);

        if (node && node->fleet_gen <= op->generation) {
            node->fleet_gen = op->generation;
            node->fleet_epoch = (uint32_t) zone->sh->fleet.epoch;
            node->fleet_dirty = 0;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "tokenrefresh: credential \"%V\" stored in the "
                       "fleet, generation %uD", &op->log_name,
                       op->generation);

        /* with replicas: the lease goes once they have it too */

        if (zone->redis_replicas
            && ngx_http_tokenrefresh_redis_wait(zone, zone->redis_replicas,
                                    NGX_HTTP_TOKENREFRESH_FLEET_REPLICAS,
                                    ngx_http_tokenrefresh_fleet_replicated,
                                    op)
               == NGX_OK)
        {
            return;
        }

    } else {
        (void) ngx_atomic_fetch_add(&zone->sh->fleet.fenced, 1);

        ngx_http_tokenrefresh_fleet_unstored(op, rc == 0);

        if (rc == 0) {
            /* no answer: the lease may still be there */
            if (op->done) {
                op->done(op->data);
            }
            ngx_http_tokenrefresh_fleet_later(op);

            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "tokenrefresh: the new tokens of credential \"%V\" "
                          "could not be given to the fleet (redis did not "
                          "answer); this node keeps them, and gives them "
                          "when it is back", &op->log_name);
            return;
        }

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "tokenrefresh: the fleet refused the new tokens of "
                      "credential \"%V\": %s; this node keeps them",
                      &op->log_name,
                      rc == -1 ? "its lease was no longer this node's"
                      : rc == -2 ? "the fleet's generation moved"
                      : "redis did not answer");
    }

    if (op->done) {
        op->done(op->data);
    }
    ngx_free(op);
}


/*
 * WAIT answered: how many replicas have the new tokens.  Fewer than asked
 * for: a failover now could lose them (the nodes that hold them write
 * them back when they reconnect); said, and the lease goes anyway.
 */

static void
ngx_http_tokenrefresh_fleet_replicated(void *data, void *r)
{
    ngx_http_tokenrefresh_fleet_op_t *op = data;

    redisReply  *reply = r;
    ngx_uint_t   n;

    n = (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        ? (ngx_uint_t) reply->integer : 0;

    if (n < op->zone->redis_replicas) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "tokenrefresh: the new tokens of credential \"%V\" "
                      "reached %ui of %ui redis replicas in %d ms",
                      &op->log_name, n, op->zone->redis_replicas,
                      NGX_HTTP_TOKENREFRESH_FLEET_REPLICAS);
    }

    if (op->done) {
        op->done(op->data);
    }
    ngx_free(op);
}


/*
 * The fleet did not take the new tokens.  Redis away: this node holds the
 * newest, at the generation they would have had, and gives them to the
 * fleet when redis is back.  Refused: someone else stored meanwhile, and
 * this node is behind, at the generation its lease was taken at.
 */

static void
ngx_http_tokenrefresh_fleet_unstored(ngx_http_tokenrefresh_fleet_op_t *op,
    ngx_uint_t away)
{
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    zone = op->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&op->ref);

    if (node) {
        node->fleet_gen = away ? op->generation : op->seen;
        node->fleet_dirty = away;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* KEYS: the lease; ARGV: the owner, its time in ms.  Claimed again. */

static const char  ngx_http_tokenrefresh_fleet_claim_script[] =
    "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])";


ngx_int_t
ngx_http_tokenrefresh_fleet_claim(ngx_http_tokenrefresh_refresh_t *rf)
{
    u_char                             px[NGX_INT_T_LEN];
    ngx_msec_t                         left;
    ngx_str_t                          args[3];
    ngx_http_tokenrefresh_fleet_op_t  *op;

    op = ngx_http_tokenrefresh_fleet_op(rf);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->rf = NULL;

    left = rf->deadline.timer_set
           ? (ngx_msec_t) ((ngx_msec_int_t) (rf->deadline.timer.key
                                             - ngx_current_msec))
           : 0;

    args[0] = op->lease;
    args[1] = op->owner;
    args[2].data = px;
    args[2].len = ngx_sprintf(px, "%M",
                              left + NGX_HTTP_TOKENREFRESH_LEASE_MARGIN)
                  - px;

    if (ngx_http_tokenrefresh_redis_eval(rf->zone,
                                    ngx_http_tokenrefresh_fleet_claim_script,
                                    1, args, 3,
                                    ngx_http_tokenrefresh_fleet_freed, op)
        != NGX_OK)
    {
        ngx_free(op);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* compare and delete: the lease goes only if it is still the caller's */

static void
ngx_http_tokenrefresh_fleet_release(ngx_http_tokenrefresh_fleet_op_t *op)
{
    ngx_str_t  args[4];
    u_char     hex[2 + 2 * NGX_HTTP_TOKENREFRESH_DIGEST_LEN];

    args[0] = op->lease;
    args[1] = op->owner;
    args[2] = op->zone->redis_channel;
    args[3] = op->name;

    if (op->session) {
        args[3].data = hex;
        args[3].len = ngx_hex_dump(ngx_cpymem(hex, "s:", 2), op->name.data,
                                   op->name.len)
                      - hex;
    }

    if (ngx_http_tokenrefresh_redis_eval(op->zone,
                                    ngx_http_tokenrefresh_fleet_release_script,
                                    1, args, 4,
                                    ngx_http_tokenrefresh_fleet_freed, op)
        != NGX_OK)
    {
        ngx_http_tokenrefresh_fleet_later(op);
    }
}


/*
 * A lease that could not be released (redis away): released when this
 * worker connects again, after what it writes back; if redis kept it
 * (it came back with its data), nobody would refresh until it expired.
 */

static void
ngx_http_tokenrefresh_fleet_later(ngx_http_tokenrefresh_fleet_op_t *op)
{
    if (ngx_http_tokenrefresh_fleet_leases.next == NULL) {
        ngx_queue_init(&ngx_http_tokenrefresh_fleet_leases);
    }

    ngx_queue_insert_tail(&ngx_http_tokenrefresh_fleet_leases, &op->queue);
}


static void
ngx_http_tokenrefresh_fleet_release_later(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_queue_t                       *q, *next;
    ngx_http_tokenrefresh_fleet_op_t  *op;

    if (ngx_http_tokenrefresh_fleet_leases.next == NULL) {
        return;
    }

    for (q = ngx_queue_head(&ngx_http_tokenrefresh_fleet_leases);
         q != ngx_queue_sentinel(&ngx_http_tokenrefresh_fleet_leases);
         q = next)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_tokenrefresh_fleet_op_t, queue);

        if (op->zone == zone) {
            ngx_queue_remove(q);
            ngx_http_tokenrefresh_fleet_release(op);
        }
    }
}


static void
ngx_http_tokenrefresh_fleet_freed(void *data, void *reply)
{
    ngx_free(data);
}


/* the keys and the owner, in memory of the script's own */

static ngx_http_tokenrefresh_fleet_op_t *
ngx_http_tokenrefresh_fleet_op(ngx_http_tokenrefresh_refresh_t *rf)
{
    u_char                            *p;
    size_t                             len;
    ngx_str_t                         *prefix;
    ngx_http_tokenrefresh_fleet_op_t  *op;

    prefix = &rf->zone->redis_prefix;

    len = sizeof(ngx_http_tokenrefresh_fleet_op_t)
          + 2 * (prefix->len + sizeof("slease:") - 1 + 2 * rf->name.len)
          + rf->owner_len + rf->log_name.len + rf->name.len;

    op = ngx_alloc(len, ngx_cycle->log);
    if (op == NULL) {
        return NULL;
    }

    ngx_memzero(op, sizeof(ngx_http_tokenrefresh_fleet_op_t));

    op->rf = rf;
    op->zone = rf->zone;
    op->ref = rf->ref;

    p = (u_char *) (op + 1);

    op->lease.data = p;
    p = ngx_http_tokenrefresh_fleet_key(p, rf->zone, "lease:", &rf->name,
                                        rf->session);
    op->lease.len = p - op->lease.data;

    op->cred.data = p;
    p = ngx_http_tokenrefresh_fleet_key(p, rf->zone, "cred:", &rf->name,
                                        rf->session);
    op->cred.len = p - op->cred.data;

    op->session = rf->session;

    op->owner.data = p;
    p = ngx_cpymem(p, rf->owner, rf->owner_len);
    op->owner.len = rf->owner_len;

    op->log_name.data = p;
    p = ngx_cpymem(p, rf->log_name.data, rf->log_name.len);
    op->log_name.len = rf->log_name.len;

    op->name.data = p;
    (void) ngx_cpymem(p, rf->name.data, rf->name.len);
    op->name.len = rf->name.len;

    return op;
}


/*
 * A key of the zone's: "<prefix>cred:<name>"; a user's session's is
 * "<prefix>scred:<hex of its digest>", apart from any name.
 */

static u_char *
ngx_http_tokenrefresh_fleet_key(u_char *p, ngx_http_tokenrefresh_zone_t *zone,
    char *kind, ngx_str_t *name, ngx_uint_t session)
{
    p = ngx_cpymem(p, zone->redis_prefix.data, zone->redis_prefix.len);

    if (session) {
        *p++ = 's';
        p = ngx_cpymem(p, kind, ngx_strlen(kind));
        return ngx_hex_dump(p, name->data, name->len);
    }

    p = ngx_cpymem(p, kind, ngx_strlen(kind));

    return ngx_cpymem(p, name->data, name->len);
}


/*
 * The credential as this node holds it now, sealed for the fleet; an
 * access token the upstream rejected is left out.  The caller frees
 * sealed->data.
 */

static ngx_int_t
ngx_http_tokenrefresh_fleet_record(ngx_http_tokenrefresh_refresh_t *rf,
    uint32_t generation, ngx_str_t *sealed)
{
    ngx_str_t                      plain;
    ngx_http_tokenrefresh_node_t  *node;
    ngx_http_tokenrefresh_zone_t  *zone;

    zone = rf->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(&rf->ref);

    if (node == NULL
        || ngx_http_tokenrefresh_fleet_copy(node, generation, &plain)
           != NGX_OK)
    {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_ERROR;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return ngx_http_tokenrefresh_fleet_seal(zone, &rf->name, &plain, sealed);
}


/* the record in clear, in memory with room for its sealed form; locked */

static ngx_int_t
ngx_http_tokenrefresh_fleet_copy(ngx_http_tokenrefresh_node_t *node,
    uint32_t generation, ngx_str_t *plain)
{
    u_char    *p;
    size_t     len;
    uint32_t   alen, rlen;

    alen = (node->access == NULL || node->rejected == node->generation)
           ? 0 : (uint32_t) node->access_len;
    rlen = (uint32_t) node->refresh_len;

    len = NGX_HTTP_TOKENREFRESH_FLEET_HEAD + alen + rlen;

    if (node->session) {
        len += NGX_HTTP_TOKENREFRESH_FLEET_SESSION + node->session->kept_len;
    }

    plain->data = ngx_alloc(len + NGX_HTTP_TOKENREFRESH_FRAME_LEN(len),
                            ngx_cycle->log);
    if (plain->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(plain->data, "TRF1", 4);
    ngx_memzero(p, 8);
    ngx_memcpy(p, &generation, 4);
    p += 8;
    p = ngx_cpymem(p, &node->issued, 8);
    p = ngx_cpymem(p, &node->expires, 8);
    p = ngx_cpymem(p, &alen, 4);
    p = ngx_cpymem(p, &rlen, 4);
    p = ngx_cpymem(p, node->access, alen);
    p = ngx_cpymem(p, node->refresh, rlen);

    if (node->session) {
        p = ngx_cpymem(p, &node->session->created, 8);
        p = ngx_cpymem(p, &node->session->last, 8);
        p = ngx_cpymem(p, node->session->subject,
                       NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
        p = ngx_cpymem(p, &node->session->kept_len, 2);
        p = ngx_cpymem(p, node->session->kept, node->session->kept_len);
    }

    plain->len = len;

    return NGX_OK;
}


/* seals plain in place: sealed->data is plain->data, the caller frees it */

static ngx_int_t
ngx_http_tokenrefresh_fleet_seal(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_str_t *plain, ngx_str_t *sealed)
{
    u_char     abuf[512];
    ngx_int_t  rc;
    ngx_str_t  aad;

    ngx_http_tokenrefresh_fleet_aad(zone, name, &aad, abuf, sizeof(abuf));

    sealed->data = plain->data + plain->len;
    sealed->len = NGX_HTTP_TOKENREFRESH_FRAME_LEN(plain->len);

    rc = ngx_http_tokenrefresh_seal_frame(zone->state->key, &aad, plain,
                                          sealed->data);

    ngx_explicit_memzero(plain->data, plain->len);

    if (rc != NGX_OK) {
        ngx_free(plain->data);
        return NGX_ERROR;
    }

    ngx_memmove(plain->data, sealed->data, sealed->len);
    sealed->data = plain->data;

    return NGX_OK;
}


/*
 * A worker connected to redis: what this node holds goes to the fleet,
 * where the fleet has an older generation (redis restarted empty, or a
 * store failed while it was away).  Nothing is refreshed for it.
 */

void
ngx_http_tokenrefresh_fleet_connected(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_http_tokenrefresh_fleet_worker_t  *fw;

    fw = ngx_http_tokenrefresh_fleet_worker(zone);
    if (fw == NULL) {
        return;
    }

    /* the marker is asked after what this node writes back, in order */

    fw->wrote = ngx_http_tokenrefresh_fleet_write_back(zone)
                + ngx_http_tokenrefresh_fleet_reclaim(zone);

    ngx_http_tokenrefresh_fleet_release_later(zone);

    ngx_http_tokenrefresh_fleet_check(zone);

    if (!fw->check.timer_set) {
        ngx_add_timer(&fw->check, NGX_HTTP_TOKENREFRESH_MARKER_CHECK);
    }
}


/* what this node holds, where the fleet is older: how many records */

static ngx_uint_t
ngx_http_tokenrefresh_fleet_write_back(ngx_http_tokenrefresh_zone_t *zone)
{
    u_char                             *p;
    ngx_str_t                           sealed, args[6];
    ngx_queue_t                        *q;
    ngx_http_tokenrefresh_node_t       *node;
    ngx_http_tokenrefresh_fleet_put_t  *put, *first;
    ngx_uint_t                          n;
    u_char                              gen[NGX_INT_T_LEN];

    /* copies under the lock; sealed and sent after it */

    first = NULL;
    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&zone->sh->lru);
         q != ngx_queue_sentinel(&zone->sh->lru);
         q = ngx_queue_next(q))
    {
        node = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        if (node->fleet_away) {

            /* redis was the reason for its back-off, and it is back */

            node->fleet_away = 0;
            node->retry_at = 0;
            node->fail_status = 0;
            node->seq++;
        }

        if (node->session || node->fleet_gen == 0
            || (node->access == NULL && node->refresh == NULL))
        {
            continue;
        }

        put = ngx_alloc(sizeof(ngx_http_tokenrefresh_fleet_put_t)
                        + zone->redis_prefix.len + sizeof("cred:") - 1
                        + node->len, ngx_cycle->log);
        if (put == NULL) {
            break;
        }

        if (ngx_http_tokenrefresh_fleet_copy(node, node->fleet_gen,
                                             &put->plain)
            != NGX_OK)
        {
            ngx_free(put);
            break;
        }

        put->generation = node->fleet_gen;

        p = (u_char *) (put + 1);
        put->key.data = p;
        p = ngx_cpymem(p, zone->redis_prefix.data, zone->redis_prefix.len);
        p = ngx_cpymem(p, "cred:", sizeof("cred:") - 1);
        put->name.data = p;
        put->name.len = node->len;
        p = ngx_cpymem(p, node->name, node->len);
        put->key.len = p - put->key.data;

        put->next = first;
        first = put;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    while (first) {
        put = first;
        first = put->next;

        if (ngx_http_tokenrefresh_fleet_seal(zone, &put->name, &put->plain,
                                             &sealed)
            == NGX_OK)
        {
            args[0] = put->key;
            args[1].data = gen;
            args[1].len = ngx_sprintf(gen, "%uD", put->generation) - gen;
            args[2] = sealed;
            args[3] = zone->redis_channel;
            args[4] = put->name;
            ngx_str_set(&args[5], "0");

            if (ngx_http_tokenrefresh_redis_eval(zone,
                                ngx_http_tokenrefresh_fleet_put_script,
                                1, args, 6, ngx_http_tokenrefresh_fleet_put,
                                NULL)
                == NGX_OK)
            {
                n++;
            }

            ngx_free(sealed.data);
        }

        ngx_free(put);
    }

    return n;
}


static ngx_http_tokenrefresh_fleet_worker_t *
ngx_http_tokenrefresh_fleet_worker(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_http_tokenrefresh_fleet_worker_t  *fw;

    if (zone->fleet) {
        return zone->fleet;
    }

    fw = ngx_pcalloc(ngx_cycle->pool,
                     sizeof(ngx_http_tokenrefresh_fleet_worker_t));
    if (fw == NULL) {
        return NULL;
    }

    fw->zone = zone;
    fw->check.handler = ngx_http_tokenrefresh_fleet_check_handler;
    fw->check.data = fw;
    fw->check.log = ngx_cycle->log;
    fw->check.cancelable = 1;

    zone->fleet = fw;

    return fw;
}


/*
 * KEYS: the marker, "settling"; ARGV: a new marker, "1" if it may be set,
 * how long no lease is given then (the nodes whose refreshes were in
 * flight claim theirs again meanwhile: they reconnect within their
 * back-off).  The marker, or nil: it is gone, and may not be set yet.
 */

static const char  ngx_http_tokenrefresh_fleet_marker_script[] =
    "local m = redis.call('GET', KEYS[1]) "
    "if m then return m end "
    "if ARGV[2] == '1' then "
    "  redis.call('SET', KEYS[1], ARGV[1]) "
    "  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3]) "
    "  return ARGV[1] "
    "end "
    "return false";


static void
ngx_http_tokenrefresh_fleet_check(ngx_http_tokenrefresh_zone_t *zone)
{
    u_char                                *p;
    ngx_str_t                              args[5];
    ngx_http_tokenrefresh_fleet_worker_t  *fw;
    u_char                                 fresh[NGX_HTTP_TOKENREFRESH_MARKER];

    fw = ngx_http_tokenrefresh_fleet_worker(zone);

    if (fw == NULL || fw->asking) {
        return;
    }

    p = fresh;

    while (p < fresh + NGX_HTTP_TOKENREFRESH_MARKER) {
        p = ngx_sprintf(p, "%08xD", (uint32_t) ngx_random());
    }

    args[0] = zone->redis_marker;
    args[1] = zone->redis_settling;
    args[2].data = fresh;
    args[2].len = NGX_HTTP_TOKENREFRESH_MARKER;
    ngx_str_set(&args[4], NGX_HTTP_TOKENREFRESH_SETTLE_STR);

    /* one that gave something back sets it at once; others wait a while */

    ngx_str_set(&args[3], "0");

    if ((fw->wrote
         || (fw->missing
             && ngx_current_msec - fw->missing
                >= NGX_HTTP_TOKENREFRESH_MARKER_GRACE))
        && !ngx_http_tokenrefresh_fleet_leases_elsewhere(zone))
    {
        /* not while another worker has a refresh in flight to claim */
        ngx_str_set(&args[3], "1");
    }

    if (ngx_http_tokenrefresh_redis_eval(zone,
                                    ngx_http_tokenrefresh_fleet_marker_script,
                                    2, args, 5,
                                    ngx_http_tokenrefresh_fleet_marked, fw)
        == NGX_OK)
    {
        fw->asking = 1;
    }
}


static void
ngx_http_tokenrefresh_fleet_marked(void *data, void *r)
{
    ngx_http_tokenrefresh_fleet_worker_t *fw = data;

    redisReply  *reply = r;

    fw->asking = 0;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && reply->len == NGX_HTTP_TOKENREFRESH_MARKER)
    {
        if (fw->len == NGX_HTTP_TOKENREFRESH_MARKER
            && ngx_memcmp(fw->marker, reply->str, fw->len) != 0)
        {
            /* another marker: redis lost its data while this one looked */

            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "tokenrefresh: redis \"%V\" lost the fleet's "
                          "state of zone \"%V\"; this node gives back what "
                          "it holds", &fw->zone->redis_addr,
                          &fw->zone->shm_zone->shm.name);

            (void) ngx_http_tokenrefresh_fleet_write_back(fw->zone);
            (void) ngx_http_tokenrefresh_fleet_reclaim(fw->zone);
        }

        ngx_memcpy(fw->marker, reply->str, NGX_HTTP_TOKENREFRESH_MARKER);
        fw->len = NGX_HTTP_TOKENREFRESH_MARKER;
        fw->missing = 0;
        fw->wrote = 0;
        return;
    }

    /* gone: what this node holds goes back first, the marker next time */

    if (fw->missing == 0) {
        fw->missing = ngx_current_msec;

        if (fw->len) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "tokenrefresh: redis \"%V\" lost the fleet's "
                          "state of zone \"%V\"; this node gives back what "
                          "it holds", &fw->zone->redis_addr,
                          &fw->zone->shm_zone->shm.name);
        }

        fw->wrote = ngx_http_tokenrefresh_fleet_write_back(fw->zone)
                    + ngx_http_tokenrefresh_fleet_reclaim(fw->zone);
        fw->len = 0;

        if (fw->wrote) {
            ngx_http_tokenrefresh_fleet_check(fw->zone);
        }
    }
}


static void
ngx_http_tokenrefresh_fleet_check_handler(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_fleet_worker_t *fw = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    if (ngx_http_tokenrefresh_redis_up(fw->zone)) {
        ngx_http_tokenrefresh_fleet_check(fw->zone);
    }

    ngx_add_timer(ev, NGX_HTTP_TOKENREFRESH_MARKER_CHECK);
}


static void
ngx_http_tokenrefresh_fleet_put(void *data, void *reply)
{
    /* a failure was logged by the client; the next connect tries again */
}


/* a record belongs to one zone and one credential: "TRF1", zone, name */

static void
ngx_http_tokenrefresh_fleet_aad(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_str_t *aad, u_char *buf, size_t size)
{
    u_char  *p;

    p = ngx_snprintf(buf, size, "TRF1%V", &zone->shm_zone->shm.name);

    if ((size_t) (buf + size - p) > name->len + 1) {
        *p++ = '\0';
        p = ngx_cpymem(p, name->data, name->len);

    } else {
        /* a long name: its digest */
        *p++ = '\1';
        ngx_http_tokenrefresh_digest(p, name->data, name->len);
        p += NGX_HTTP_TOKENREFRESH_DIGEST_LEN;
    }

    aad->data = buf;
    aad->len = p - buf;
}


/*
 * Opens a record of the fleet's into pool memory: NGX_DECLINED if it
 * cannot be opened (another key) or does not match its generation (an
 * older record copied under a newer number).  A session's part, if asked
 * for, goes to *ss and *kept.
 */

static ngx_int_t
ngx_http_tokenrefresh_fleet_open(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, uint32_t generation, redisReply *record,
    ngx_pool_t *pool, ngx_http_tokenrefresh_token_t *tok,
    ngx_http_tokenrefresh_session_t *ss, ngx_str_t *kept)
{
    u_char     *p, *last, abuf[512];
    uint32_t    g, alen, rlen;
    ngx_str_t   in, plain, aad;

    in.data = (u_char *) record->str;
    in.len = record->len;

    plain.data = ngx_pnalloc(pool, in.len);
    if (plain.data == NULL) {
        return NGX_ERROR;
    }

    ngx_http_tokenrefresh_fleet_aad(zone, name, &aad, abuf, sizeof(abuf));

    if ((ngx_http_tokenrefresh_open_frame(zone->state->key, &aad, &in,
                                          &plain)
         != NGX_OK
         && (!zone->state->two_keys
             || ngx_http_tokenrefresh_open_frame(zone->state->old_key, &aad,
                                                 &in, &plain)
                != NGX_OK))
        || plain.len < NGX_HTTP_TOKENREFRESH_FLEET_HEAD
        || ngx_memcmp(plain.data, "TRF1", 4) != 0)
    {
        (void) ngx_atomic_fetch_add(&zone->sh->fleet.errors, 1);
        return NGX_DECLINED;
    }

    p = plain.data + 4;
    last = plain.data + plain.len;

    ngx_memcpy(&g, p, 4);
    p += 8;
    ngx_memcpy(&tok->issued, p, 8);
    p += 8;
    ngx_memcpy(&tok->expires, p, 8);
    p += 8;
    ngx_memcpy(&alen, p, 4);
    p += 4;
    ngx_memcpy(&rlen, p, 4);
    p += 4;

    /* the generation is sealed in: an older record under a newer number */

    if (g != generation || (size_t) alen + rlen > (size_t) (last - p)) {
        (void) ngx_atomic_fetch_add(&zone->sh->fleet.errors, 1);
        return NGX_DECLINED;
    }

    tok->access_token.data = p;
    tok->access_token.len = alen;
    tok->refresh_token.data = p + alen;
    tok->refresh_token.len = rlen;

    if (ss == NULL) {
        return NGX_OK;
    }

    p += alen + rlen;

    if ((size_t) (last - p) < NGX_HTTP_TOKENREFRESH_FLEET_SESSION) {
        return NGX_DECLINED;
    }

    ngx_memcpy(&ss->created, p, 8);
    p += 8;
    ngx_memcpy(&ss->last, p, 8);
    p += 8;
    ngx_memcpy(ss->subject, p, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    p += NGX_HTTP_TOKENREFRESH_DIGEST_LEN;
    ngx_memcpy(&ss->kept_len, p, 2);
    p += 2;

    if ((size_t) (last - p) != ss->kept_len) {
        return NGX_DECLINED;
    }

    kept->data = p;
    kept->len = ss->kept_len;

    return NGX_OK;
}


/* a session's record lives in redis as long as the session may: ms, or 0 */

static int64_t
ngx_http_tokenrefresh_fleet_ttl(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_ref_t *ref)
{
    int64_t                        ttl;
    ngx_http_tokenrefresh_node_t  *node;

    ttl = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_deref(ref);

    if (node && node->session) {
        ttl = node->session->created + (int64_t) zone->session_lifetime
              - ngx_http_tokenrefresh_now();
        ttl = ngx_max(ttl, 1);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return ttl;
}


/*
 * A login created a session here: the fleet gets it, at generation 1,
 * so that any node can serve its user.  The answer does not wait for it.
 */

void
ngx_http_tokenrefresh_fleet_session_new(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest)
{
    u_char                        *p;
    ngx_str_t                      name, plain, sealed, args[6];
    ngx_http_tokenrefresh_ref_t    ref;
    ngx_http_tokenrefresh_node_t  *node;
    u_char                         key[NGX_HTTP_TOKENREFRESH_FLEET_KEY],
                                   ttl[NGX_INT64_LEN];

    if (zone->redis == NULL) {
        return;
    }

    name.data = digest;
    name.len = NGX_HTTP_TOKENREFRESH_DIGEST_LEN;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_tokenrefresh_node_of(zone, &name, 1);

    if (node == NULL
        || ngx_http_tokenrefresh_fleet_copy(node, 1, &plain) != NGX_OK)
    {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    node->fleet_gen = 1;
    ref.node = node;
    ref.id = node->id;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (ngx_http_tokenrefresh_fleet_seal(zone, &name, &plain, &sealed)
        != NGX_OK)
    {
        return;
    }

    p = ngx_http_tokenrefresh_fleet_key(key, zone, "cred:", &name, 1);

    args[0].data = key;
    args[0].len = p - key;
    ngx_str_set(&args[1], "1");
    args[2] = sealed;
    ngx_str_null(&args[3]);
    args[4] = name;
    args[5].data = ttl;
    args[5].len = ngx_sprintf(ttl, "%L",
                              ngx_http_tokenrefresh_fleet_ttl(zone, &ref))
                  - ttl;

    (void) ngx_http_tokenrefresh_redis_eval(zone,
                                ngx_http_tokenrefresh_fleet_put_script,
                                1, args, 6, ngx_http_tokenrefresh_fleet_put,
                                NULL);

    ngx_free(sealed.data);
}


/* a session ended here (a logout, a refresh refused): on every node */

void
ngx_http_tokenrefresh_fleet_session_gone(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest)
{
    u_char     *p;
    ngx_str_t   name, args[3];
    u_char      key[NGX_HTTP_TOKENREFRESH_FLEET_KEY],
                msg[2 + 2 * NGX_HTTP_TOKENREFRESH_DIGEST_LEN];

    if (zone->redis == NULL) {
        return;
    }

    name.data = digest;
    name.len = NGX_HTTP_TOKENREFRESH_DIGEST_LEN;

    p = ngx_http_tokenrefresh_fleet_key(key, zone, "cred:", &name, 1);

    args[0].data = key;
    args[0].len = p - key;
    args[1] = zone->redis_channel;
    args[2].data = msg;
    args[2].len = ngx_hex_dump(ngx_cpymem(msg, "- ", 2), digest,
                               NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
                  - msg;

    (void) ngx_http_tokenrefresh_redis_eval(zone,
                                ngx_http_tokenrefresh_fleet_gone_script,
                                1, args, 3, ngx_http_tokenrefresh_fleet_put,
                                NULL);
}


/*
 * A session's handle unknown here: the fleet is asked, once per request,
 * and unknown handles are not asked again for a second (forged handles
 * must not make a request to redis each).  NGX_AGAIN: the request waits
 * for the answer; NGX_DECLINED: the session has ended; NGX_BUSY: redis is
 * away, nobody can tell.
 */

typedef struct {
    ngx_http_request_t               *request;  /* NULL: it went meanwhile */
    ngx_http_tokenrefresh_ctx_t      *ctx;
    ngx_pool_cleanup_t               *cln;
    u_char                            digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
} ngx_http_tokenrefresh_fleet_find_t;


typedef struct {
    u_char                            digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    ngx_msec_t                        until;
} ngx_http_tokenrefresh_fleet_miss_t;


static ngx_http_tokenrefresh_fleet_miss_t
    ngx_http_tokenrefresh_fleet_misses[NGX_HTTP_TOKENREFRESH_FLEET_MISSES];


ngx_int_t
ngx_http_tokenrefresh_fleet_session_find(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx)
{
    u_char                              *p;
    ngx_str_t                            args[1];
    ngx_http_tokenrefresh_zone_t        *zone;
    ngx_http_tokenrefresh_fleet_find_t  *fd;
    ngx_http_tokenrefresh_fleet_miss_t  *miss;
    u_char                               key[NGX_HTTP_TOKENREFRESH_FLEET_KEY];

    zone = ctx->zone;

    if (zone->redis == NULL || ctx->fleet_asked || !ctx->session) {
        return NGX_DECLINED;
    }

    /*
     * redis away: whether the session lives elsewhere is unknown, and the
     * user must not be told to log in again for it: try again soon
     */

    if (!ngx_http_tokenrefresh_redis_up(zone)) {
        return NGX_BUSY;
    }

    ctx->fleet_asked = 1;

    miss = &ngx_http_tokenrefresh_fleet_misses[
               ngx_http_tokenrefresh_digest_key(ctx->name.data)
               % NGX_HTTP_TOKENREFRESH_FLEET_MISSES];

    if (ngx_memcmp(miss->digest, ctx->name.data,
                   NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
        == 0
        && (ngx_msec_int_t) (miss->until - ngx_current_msec) > 0)
    {
        return NGX_DECLINED;
    }

    fd = ngx_alloc(sizeof(ngx_http_tokenrefresh_fleet_find_t),
                   r->connection->log);
    if (fd == NULL) {
        return NGX_DECLINED;
    }

    fd->cln = ngx_pool_cleanup_add(r->pool, 0);
    if (fd->cln == NULL) {
        ngx_free(fd);
        return NGX_DECLINED;
    }

    fd->request = r;
    fd->ctx = ctx;
    ngx_memcpy(fd->digest, ctx->name.data, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);

    p = ngx_http_tokenrefresh_fleet_key(key, zone, "cred:", &ctx->name, 1);

    args[0].data = key;
    args[0].len = p - key;

    if (ngx_http_tokenrefresh_redis_eval(zone,
                                ngx_http_tokenrefresh_fleet_find_script,
                                1, args, 1, ngx_http_tokenrefresh_fleet_found,
                                fd)
        != NGX_OK)
    {
        ngx_free(fd);
        return NGX_DECLINED;
    }

    fd->cln->handler = ngx_http_tokenrefresh_fleet_unfind;
    fd->cln->data = fd;

    /* the client may go meanwhile: ngx_http_test_reading finalizes it */

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    return NGX_AGAIN;
}


static void
ngx_http_tokenrefresh_fleet_unfind(void *data)
{
    ngx_http_tokenrefresh_fleet_find_t *fd = data;

    fd->request = NULL;
}


static void
ngx_http_tokenrefresh_fleet_found(void *data, void *r)
{
    ngx_http_tokenrefresh_fleet_find_t *fd = data;

    ngx_int_t                            n, rc;
    ngx_str_t                            name, kept;
    redisReply                          *reply = r;
    ngx_connection_t                    *c;
    ngx_http_request_t                  *req;
    ngx_http_tokenrefresh_zone_t        *zone;
    ngx_http_tokenrefresh_token_t        tok;
    ngx_http_tokenrefresh_session_t      ss;
    ngx_http_tokenrefresh_fleet_miss_t  *miss;

    req = fd->request;

    if (req == NULL || (reply == NULL && (ngx_exiting || ngx_terminate))) {

        /* the request went, or the worker exits without an answer */

        if (req) {
            fd->cln->handler = NULL;
        }

        ngx_free(fd);
        return;
    }

    fd->cln->handler = NULL;

    zone = fd->ctx->zone;
    c = req->connection;

    name.data = fd->digest;
    name.len = NGX_HTTP_TOKENREFRESH_DIGEST_LEN;

    n = (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
         && reply->element[0]->type == REDIS_REPLY_STRING
         && reply->element[1]->type == REDIS_REPLY_STRING)
        ? ngx_atoi((u_char *) reply->element[0]->str,
                   reply->element[0]->len)
        : NGX_ERROR;

    rc = NGX_ERROR;

    if (n > 0 && n <= 0xffffffff
        && ngx_http_tokenrefresh_fleet_open(zone, &name, (uint32_t) n,
                                            reply->element[1], req->pool,
                                            &tok, &ss, &kept)
           == NGX_OK)
    {
        /*
         * its own creation time and generation, not a new login's; once:
         * another worker of this node may have taken it in meanwhile
         */

        rc = ngx_http_tokenrefresh_session_create(zone, fd->digest, &tok,
                                                  ss.subject, &kept,
                                                  ss.created, (uint32_t) n,
                                                  c->log);

        ngx_explicit_memzero(tok.access_token.data,
                             tok.access_token.len + tok.refresh_token.len);
    }

    if (rc == NGX_DECLINED) {
        /* it is here now: the request goes on with it */

    } else if (rc == NGX_OK) {
        (void) ngx_atomic_fetch_add(&zone->sh->fleet.adopted, 1);

        if (zone->state) {
            (void) ngx_http_tokenrefresh_journal_put(zone, &name, 1, NULL,
                                                     NULL, NULL, c->log);
        }

        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "tokenrefresh: %V taken from the fleet",
                      &fd->ctx->log_name);

    } else if (reply) {

        /* unknown, or unusable: not asked again for a while */

        miss = &ngx_http_tokenrefresh_fleet_misses[
                   ngx_http_tokenrefresh_digest_key(fd->digest)
                   % NGX_HTTP_TOKENREFRESH_FLEET_MISSES];

        ngx_memcpy(miss->digest, fd->digest,
                   NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
        miss->until = ngx_current_msec + NGX_HTTP_TOKENREFRESH_FLEET_UNKNOWN;
    }

    ngx_free(fd);

    req->read_event_handler = ngx_http_block_reading;
    req->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(req);
    ngx_http_run_posted_requests(c);
}
