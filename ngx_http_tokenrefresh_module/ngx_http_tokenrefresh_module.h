
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Types shared by the files of ngx_http_tokenrefresh_module.
 */


#ifndef _NGX_HTTP_TOKENREFRESH_MODULE_H_INCLUDED_
#define _NGX_HTTP_TOKENREFRESH_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_TOKENREFRESH_MAX_NAME       256
#define NGX_HTTP_TOKENREFRESH_PREFIX_MAX     128

/* how often a worker with parked requests looks at the zone, in ms */
#define NGX_HTTP_TOKENREFRESH_POLL           2

/* a lease outlives the refresh deadline by this much, in ms */
#define NGX_HTTP_TOKENREFRESH_LEASE_MARGIN   2000

/* the longest Retry-After of a token endpoint that is honoured, in ms */
#define NGX_HTTP_TOKENREFRESH_MAX_RETRY      3600000

#define NGX_HTTP_TOKENREFRESH_MAX_DEPTH      32

#define NGX_HTTP_TOKENREFRESH_DIGEST_LEN     16
#define NGX_HTTP_TOKENREFRESH_NONCE_LEN      12
#define NGX_HTTP_TOKENREFRESH_TAG_LEN        16
#define NGX_HTTP_TOKENREFRESH_SEALED_LEN(n)                                   \
    (NGX_HTTP_TOKENREFRESH_NONCE_LEN + (n) + NGX_HTTP_TOKENREFRESH_TAG_LEN)
#define NGX_HTTP_TOKENREFRESH_SALT_LEN       16
#define NGX_HTTP_TOKENREFRESH_FRAME_LEN(n)                                    \
    (NGX_HTTP_TOKENREFRESH_SALT_LEN + NGX_HTTP_TOKENREFRESH_SEALED_LEN(n))
#define NGX_HTTP_TOKENREFRESH_KEY_LEN        32

/* refreshes rejections may start at once, then one per interval */
#define NGX_HTTP_TOKENREFRESH_REJECT_BURST   3

/* sessions deleted between two journal records, remembered per zone */
#define NGX_HTTP_TOKENREFRESH_GONE           256

/* refresh tokens remembered as spent, per zone */
#define NGX_HTTP_TOKENREFRESH_SPENT          64

#define NGX_HTTP_TOKENREFRESH_RS256          0
#define NGX_HTTP_TOKENREFRESH_ES256          1
#define NGX_HTTP_TOKENREFRESH_HS256          2

#define NGX_HTTP_TOKENREFRESH_BEARER         "Bearer "
#define NGX_HTTP_TOKENREFRESH_BEARER_LEN     (sizeof("Bearer ") - 1)


/* how a token is obtained */
#define NGX_HTTP_TOKENREFRESH_GRANT_NONE     0
#define NGX_HTTP_TOKENREFRESH_GRANT_REFRESH  1
#define NGX_HTTP_TOKENREFRESH_GRANT_LOGIN    2
#define NGX_HTTP_TOKENREFRESH_GRANTS         3


/* what the store decided for a request */
#define NGX_HTTP_TOKENREFRESH_USE            0
#define NGX_HTTP_TOKENREFRESH_USE_AND_FETCH  1
#define NGX_HTTP_TOKENREFRESH_FETCH          2
#define NGX_HTTP_TOKENREFRESH_WAIT           3
#define NGX_HTTP_TOKENREFRESH_FAIL           4
#define NGX_HTTP_TOKENREFRESH_NOMEM          5
#define NGX_HTTP_TOKENREFRESH_ENDED          6


/* how a refresh or login ended */
#define NGX_HTTP_TOKENREFRESH_OK             0
#define NGX_HTTP_TOKENREFRESH_REFUSED        1
#define NGX_HTTP_TOKENREFRESH_BAD            2
#define NGX_HTTP_TOKENREFRESH_TIMEDOUT       3
#define NGX_HTTP_TOKENREFRESH_ABORTED        4
#define NGX_HTTP_TOKENREFRESH_UNKNOWN        5
#define NGX_HTTP_TOKENREFRESH_NOROOM         6
#define NGX_HTTP_TOKENREFRESH_DENIED         7
#define NGX_HTTP_TOKENREFRESH_OUTCOMES       8


/* what a rejected token means, see ngx_http_tokenrefresh_reject() */
#define NGX_HTTP_TOKENREFRESH_STALE          0
#define NGX_HTTP_TOKENREFRESH_RENEW          1
#define NGX_HTTP_TOKENREFRESH_SUSPECT        2
#define NGX_HTTP_TOKENREFRESH_LOOP           3


/* what the module did for a request: $tokenrefresh_outcome */
#define NGX_HTTP_TOKENREFRESH_R_NONE         0
#define NGX_HTTP_TOKENREFRESH_R_HIT          1
#define NGX_HTTP_TOKENREFRESH_R_REFRESHED    2
#define NGX_HTTP_TOKENREFRESH_R_WAITED       3
#define NGX_HTTP_TOKENREFRESH_R_FAILED       4
#define NGX_HTTP_TOKENREFRESH_R_DENIED       5
#define NGX_HTTP_TOKENREFRESH_R_REPLAYED     6
#define NGX_HTTP_TOKENREFRESH_R_GONE         7
#define NGX_HTTP_TOKENREFRESH_R_ENDED        8


typedef struct {
    ngx_atomic_uint_t                 requests;   /* also added to unlocked */
    ngx_uint_t                        waits;
    ngx_uint_t                        wait_msec;
    ngx_uint_t                        wait_msec_max;
    ngx_uint_t                        failed;
    ngx_uint_t                        replays;
    ngx_uint_t                        replays_refused;
    ngx_uint_t                        rejections;
    /* 32 bits: a node fits a 512-byte slab chunk (docs/benchmarks.md) */
    uint32_t                          fetches[NGX_HTTP_TOKENREFRESH_GRANTS]
                                             [NGX_HTTP_TOKENREFRESH_OUTCOMES];
} ngx_http_tokenrefresh_counters_t;


/*
 * What a user's session has beside its tokens, in a slab chunk of its
 * own.  The handle itself is nowhere: the node's name is its digest.
 */

typedef struct {
    int64_t                           created;      /* wall clock, ms */
    int64_t                           last;         /* the last use */
    int64_t                           saved;        /* in the journal */

    /* the digest of the JWT "sub" of the login's token, or zeros */
    u_char                            subject
                                          [NGX_HTTP_TOKENREFRESH_DIGEST_LEN];

    /* tokenrefresh_session_keep values: { u8 len, name, u16 len, value } */
    u_short                           kept_len;
    u_char                            kept[1];
} ngx_http_tokenrefresh_session_t;


/*
 * One credential in the shared zone.  Token bytes live in separate slab
 * chunks so that a new token is written in full before the old one is
 * freed.  "generation" counts stored access tokens; "seq" counts every
 * change a parked request may be waiting for (new token, failure, lease
 * released), and is what other workers poll.
 */

typedef struct {
    ngx_rbtree_node_t                 node;
    ngx_queue_t                       lru;

    ngx_uint_t                        id;
    ngx_uint_t                        generation;
    ngx_atomic_uint_t                 seq;

    /*
     * Odd while the fields the lock-free read of a valid token looks at
     * (id, access, access_len, issued, expires, generation, rejected) are
     * being changed: see ngx_http_tokenrefresh_acquire_fast().
     */
    ngx_atomic_uint_t                 wseq;

    /* second-chance LRU: used since it was last moved to the head? */
    ngx_msec_t                        used;
    ngx_msec_t                        moved;

    u_char                           *access;
    u_char                           *refresh;
    size_t                            access_len;
    size_t                            refresh_len;

    /* the digest of the refresh token held, to tell it from a newer one */
    u_char                            refresh_digest
                                          [NGX_HTTP_TOKENREFRESH_DIGEST_LEN];

    /* wall clock, in milliseconds since the epoch */
    int64_t                           issued;
    int64_t                           expires;

    /* the upstream rejected this generation: it is not used again */
    ngx_uint_t                        rejected;

    /*
     * The loop guard: the refreshes a rejection may start are a bucket of
     * NGX_HTTP_TOKENREFRESH_REJECT_BURST, refilled one per reject_interval
     * (monotonic ms since reject_last), so that an upstream that rejects
     * every token, or one endpoint that answers 401 to every token beside
     * others that take it, cannot have a refresh per request.  The
     * interval doubles each time the bucket runs dry, and is back to its
     * minimum once it is full again.  young_until: the last "younger than
     * tokenrefresh_min_token_age" line.
     */
    ngx_msec_t                        reject_last;
    ngx_msec_t                        reject_interval;
    ngx_msec_t                        young_until;

    /* the lease: at most one refresh in flight, across all workers */
    ngx_pid_t                         lease_pid;
    ngx_msec_t                        lease_deadline;
    ngx_uint_t                        lease_seq;

    /* failures and back-off; monotonic milliseconds */
    ngx_uint_t                        fails;
    ngx_msec_t                        retry_at;
    ngx_msec_t                        last_duration;
    time_t                            last_time;

    /* no eviction while a request may still be waiting for this entry */
    ngx_msec_t                        wait_until;

    /* requests waiting now, in all workers (for the status page) */
    ngx_uint_t                        waiting;

    ngx_http_tokenrefresh_counters_t  counters;

    /* the digest of the last seed applied, so that it applies only once */
    u_char                            seed[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];

    /* a user's session (its name is the digest of its handle), or NULL */
    ngx_http_tokenrefresh_session_t  *session;

    /*
     * The fleet's generation of the tokens held (see
     * ngx_http_tokenrefresh_fleet.c): 0 until this node stored or took a
     * record of the fleet's; the newest the fleet announced; the zone's
     * fleet epoch when it was last checked with the fleet
     */
    uint32_t                          fleet_gen;
    uint32_t                          fleet_news;
    uint32_t                          fleet_epoch;

    /* small values packed together, so that a node fits 512 bytes */
    u_short                           fail_status;
    u_char                            lease_grant;
    u_char                            last_outcome;
    u_char                            last_grant;
    u_char                            reject_tokens;   /* the loop guard's */
    u_char                            failed;      /* a login was refused */

    /* "no way to get a token" was logged; reset when a token is stored */
    unsigned                          warned:1;

    /*
     * A location that uses this credential can log in: without that, a
     * refresh token is the only way to a token, and eviction would lose it
     */
    unsigned                          login:1;

    /* the lease was taken in a zone this one replaced (a resizing reload) */
    unsigned                          handover:1;

    /* newer than the fleet's: given to it when redis is back */
    unsigned                          fleet_dirty:1;

    /* backing off because redis was away: not once it is back */
    unsigned                          fleet_away:1;

    u_short                           len;
    u_char                            name[1];
} ngx_http_tokenrefresh_node_t;


/*
 * A reference to a credential from outside the lock: the node may be
 * evicted, and its memory reused, meanwhile; the id says whether it is
 * still the same credential.  Dereferenced with the slab mutex held.
 */

typedef struct {
    ngx_http_tokenrefresh_node_t     *node;
    ngx_uint_t                        id;
} ngx_http_tokenrefresh_ref_t;


/*
 * Not evicted: a credential whose refresh token is its only way back to a
 * token (no location that uses it can log in).  Losing it would lose the
 * credential for good.
 */
#define ngx_http_tokenrefresh_node_protected(node)                            \
    ((node)->refresh && !(node)->login && (node)->session == NULL)


/* what an allocation may evict to make room */
#define NGX_HTTP_TOKENREFRESH_EVICT_NONE      0
#define NGX_HTTP_TOKENREFRESH_EVICT_ANY       1
#define NGX_HTTP_TOKENREFRESH_EVICT_SESSIONS  2

/* "session:" and the hex of its handle's digest */
#define NGX_HTTP_TOKENREFRESH_LABEL_LEN                                       \
    (sizeof("session:") - 1 + 2 * NGX_HTTP_TOKENREFRESH_DIGEST_LEN)

/* 256 random bits, base64url without padding */
#define NGX_HTTP_TOKENREFRESH_HANDLE_BYTES  32
#define NGX_HTTP_TOKENREFRESH_HANDLE_LEN    43


/* the rbtree key of a session: the first bytes of its handle's digest */
static ngx_inline uint32_t
ngx_http_tokenrefresh_digest_key(u_char *digest)
{
    uint32_t  key;

    ngx_memcpy(&key, digest, sizeof(uint32_t));

    return key;
}


#define ngx_http_tokenrefresh_deref(ref)                                      \
    (((ref)->node && (ref)->node->id == (ref)->id) ? (ref)->node : NULL)


/*
 * What the fleet's redis did for a zone (ngx_http_tokenrefresh_fleet.c),
 * counted by every worker without the zone's lock
 */

#define NGX_HTTP_TOKENREFRESH_FLEET_SLOTS  64

typedef struct {
    /* workers connected now: counted for the status page from "worker" */
    ngx_atomic_t                      up;
    ngx_atomic_t                      lost;        /* connections lost */
    ngx_atomic_t                      rtt;         /* last command, ms */
    ngx_atomic_t                      leases;      /* fleet leases taken */
    ngx_atomic_t                      waits;       /* another node held it */
    ngx_atomic_t                      adopted;     /* newer tokens taken */
    ngx_atomic_t                      stored;
    ngx_atomic_t                      fenced;      /* stores refused */
    ngx_atomic_t                      away;        /* refreshes held back */
    ngx_atomic_t                      fallbacks;   /* done by this node */
    ngx_atomic_t                      errors;
    ngx_atomic_t                      news;        /* announcements heard */

    /*
     * Moves on when a worker subscribes again: what was announced while
     * nobody listened is unknown, and every token is checked once more
     */
    ngx_atomic_t                      epoch;

    /* the pid of each worker (by its number) connected to redis, or 0 */
    ngx_atomic_t                      worker[NGX_HTTP_TOKENREFRESH_FLEET_SLOTS];
} ngx_http_tokenrefresh_fleet_stats_t;


typedef struct {
    ngx_rbtree_t                      rbtree;
    ngx_rbtree_node_t                 sentinel;
    ngx_queue_t                       lru;
    ngx_uint_t                        next_id;
    ngx_uint_t                        count;
    ngx_uint_t                        evictions;
    ngx_uint_t                        nomem;

    /* evictions refused because the credential holds its only way back */
    ngx_uint_t                        kept;

    /* refreshes whose outcome nobody knows: cut after they were sent */
    ngx_uint_t                        unknown;

    /* credentials with a handover lease (ngx_http_tokenrefresh_handover.c) */
    ngx_uint_t                        handovers;

    /* users' sessions: live, and ended by each cause since the start */
    ngx_uint_t                        sessions;
    ngx_uint_t                        sessions_created;
    ngx_uint_t                        sessions_refused;  /* refresh said no */
    ngx_uint_t                        sessions_idle;
    ngx_uint_t                        sessions_expired;
    ngx_uint_t                        sessions_logout;
    ngx_uint_t                        sessions_ended;    /* by an operator */
    ngx_uint_t                        sessions_evicted;

    /* the largest tokens stored: the room a new credential will need */
    size_t                            access_max;
    size_t                            refresh_max;

    /*
     * Set by a reload that replaced this zone with a bigger or smaller
     * one: the workers that still use it take no new lease and hand the
     * outcome of a refresh in flight to the new zone.
     */
    ngx_uint_t                        superseded;

    /*
     * digests of refresh tokens that must never be sent again: replaced by
     * a rotation, or refused; a seed among them is not used
     */
    ngx_uint_t                        spent_count;
    ngx_uint_t                        spent_next;
    u_char                            spent[NGX_HTTP_TOKENREFRESH_SPENT]
                                           [NGX_HTTP_TOKENREFRESH_DIGEST_LEN];

    /*
     * The journal (ngx_http_tokenrefresh_journal.c): the sequence number
     * of the last record, and the digests of the sessions deleted since
     * the last record, for the next one to say they are gone.
     */
    uint64_t                          journal_seq;
    ngx_uint_t                        gone_count;
    ngx_uint_t                        gone_lost;

    /* a reload gave the zone a state file it did not write: write it all */
    ngx_uint_t                        resave;

    /* the fleet's figures, for the status page */
    ngx_http_tokenrefresh_fleet_stats_t  fleet;
    u_char                            gone[NGX_HTTP_TOKENREFRESH_GONE]
                                          [NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
} ngx_http_tokenrefresh_shctx_t;


typedef struct {
    ngx_str_t                         path;
    ngx_str_t                         real;     /* its directory resolved */
    ngx_str_t                         lock;
    ngx_str_t                         dir;
    u_char                            key[NGX_HTTP_TOKENREFRESH_KEY_LEN];

    /* a second key= opens what the first cannot (a key being rotated) */
    u_char                            old_key[NGX_HTTP_TOKENREFRESH_KEY_LEN];
    ngx_uint_t                        two_keys;

    ngx_str_t                         journal;  /* path.journal */
    ngx_str_t                         old;      /* path.journal.old */

    /* additional data: "TRS1" or "TRJ1", and the zone's name */
    ngx_str_t                         aad;
    ngx_str_t                         journal_aad;

    /* a rejected file could not be kept aside: never save over it */
    ngx_uint_t                        blocked;

    ngx_cycle_t                      *cycle;    /* the "user" to write as */

    /* the worker's writer (ngx_http_tokenrefresh_journal.c) */
    void                             *thread_pool;
    struct ngx_http_tokenrefresh_writer_s  *writer;
} ngx_http_tokenrefresh_state_t;


/* a refresh token given by the operator, for a credential with none yet */
typedef struct {
    ngx_str_t                         name;
    ngx_str_t                         token;
    ngx_str_t                         file;
} ngx_http_tokenrefresh_seed_t;


typedef struct ngx_http_tokenrefresh_zone_s {
    ngx_http_tokenrefresh_shctx_t    *sh;
    ngx_slab_pool_t                  *shpool;
    ngx_shm_zone_t                   *shm_zone;
    size_t                            max_token_size;
    ngx_http_tokenrefresh_state_t    *state;
    ngx_array_t                      *seeds;

    /* the handover channel (ngx_http_tokenrefresh_handover.c) */
    ngx_shm_zone_t                   *channel;

    /* the zone this one replaces, until the reload's commit point */
    struct ngx_http_tokenrefresh_zone_s  *adopted;

    /* the fleet's redis (ngx_http_tokenrefresh_redis.c), and its client */
    ngx_str_t                         redis_addr;
    ngx_str_t                         redis_password;
    ngx_uint_t                        redis_db;
    ngx_str_t                         redis_prefix;
    ngx_uint_t                        redis_replicas;
    ngx_str_t                         redis_channel;   /* prefix "gen" */
    ngx_str_t                         redis_marker;    /* prefix "marker" */
    ngx_str_t                         redis_settling;
    void                             *fleet;           /* this worker's */
    void                             *redis;
    void                             *redis_sub;       /* the subscriber */

    /* users' sessions end after this long unused, and this long at most */
    ngx_msec_t                        session_idle;
    ngx_msec_t                        session_lifetime;
} ngx_http_tokenrefresh_zone_t;


/* a JSON Pointer (RFC 6901), split into reference tokens */
typedef struct {
    ngx_str_t                         text;
    ngx_array_t                      *segments;
} ngx_http_tokenrefresh_pointer_t;


/* a client assertion (RFC 7523) and how to sign it */
typedef struct {
    ngx_uint_t                        alg;
    void                             *pkey;      /* EVP_PKEY */
    ngx_str_t                         secret;
    ngx_str_t                         client_id;
    ngx_str_t                         audience;
    ngx_str_t                         kid;
    ngx_msec_t                        lifetime;
} ngx_http_tokenrefresh_assertion_t;


/*
 * How a token response is read.  It may be set in the token location
 * (it describes that endpoint) or where the credential is used; the token
 * location wins, then RFC 6749 section 5.1 applies.
 */

typedef struct {
    ngx_http_tokenrefresh_pointer_t  *access;
    ngx_http_tokenrefresh_pointer_t  *refresh;
    ngx_http_tokenrefresh_pointer_t  *expires_in;
    ngx_http_tokenrefresh_pointer_t  *expires_at;
    ngx_flag_t                        expires_at_msec;
    ngx_msec_t                        default_lifetime;
    size_t                            max_response_size;
} ngx_http_tokenrefresh_format_t;


typedef struct {
    ngx_array_t                       zone_refs;

    /* the locations with a fixed credential name, for the hit counters */
    ngx_array_t                       fixed;

    /* RFC 6749, sections 5.1 and 5.2 */
    ngx_http_tokenrefresh_pointer_t   access_token;
    ngx_http_tokenrefresh_pointer_t   refresh_token;
    ngx_http_tokenrefresh_pointer_t   expires_in;
    ngx_http_tokenrefresh_pointer_t   error;
} ngx_http_tokenrefresh_main_conf_t;


/* what a login location keeps with the session it creates */
typedef struct {
    ngx_str_t                         name;
    ngx_http_complex_value_t          value;
} ngx_http_tokenrefresh_keep_t;


/* where a session's handle travels, and who may use it */
typedef struct {
    ngx_str_t                         cookie;       /* its name, or none */
    ngx_str_t                         cookie_attrs; /* "; Path=/; ..." */
    ngx_str_t                         header;       /* lower case, or none */
    ngx_str_t                         handle_json;  /* a login answer member */
    ngx_str_t                         handle_header;
    ngx_array_t                      *origins;      /* of ngx_str_t */
    ngx_str_t                         csrf_header;  /* lower case, or none */
    ngx_uint_t                        ended_status;
} ngx_http_tokenrefresh_session_conf_t;


#define NGX_HTTP_TOKENREFRESH_SESSION_USE     1
#define NGX_HTTP_TOKENREFRESH_SESSION_LOGIN   2
#define NGX_HTTP_TOKENREFRESH_SESSION_LOGOUT  3


typedef struct ngx_http_tokenrefresh_loc_conf_s
    ngx_http_tokenrefresh_loc_conf_t;

struct ngx_http_tokenrefresh_loc_conf_s {
    /* where a token is used */
    ngx_shm_zone_t                   *shm_zone;
    ngx_http_complex_value_t         *credential;
    uint32_t                          credential_hash;   /* a fixed name */
    ngx_str_t                         credential_log;    /* printable */

    /*
     * This worker's reference to the node of a fixed name, and the uses
     * of its token the lock-free path has not yet added to the node: it
     * must not write into a node it only read (it may have been evicted
     * meanwhile), so they are added under the lock, now and then.
     */
    ngx_http_tokenrefresh_ref_t       fixed;
    ngx_uint_t                        hits;
    ngx_msec_t                        hit_time;

    u_char                           *file;
    ngx_uint_t                        line;
    ngx_str_t                         refresh_uri;
    ngx_str_t                         refresh_args;
    ngx_str_t                         login_uri;
    ngx_str_t                         login_args;
    ngx_msec_t                        ahead;
    ngx_msec_t                        wait_timeout;
    ngx_msec_t                        refresh_timeout;
    ngx_msec_t                        backoff_min;
    ngx_msec_t                        backoff_max;
    ngx_uint_t                        deny_status;
    ngx_uint_t                        failure_status;
    ngx_uint_t                        timeout_status;
    ngx_array_t                      *rejected;
    ngx_flag_t                        replay;
    ngx_uint_t                        replay_methods;
    ngx_msec_t                        min_token_age;

    /* the provider rotates refresh tokens: none sent without the fleet */
    ngx_flag_t                        rotating;

    ngx_http_tokenrefresh_format_t    format;

    /* the status page */
    ngx_uint_t                        status;
    ngx_flag_t                        status_write;

    ngx_http_tokenrefresh_assertion_t *assertion;

    /*
     * Users' sessions: a location that uses them (shm_zone is the zone),
     * logs users in (session_zone), or logs them out
     */
    ngx_uint_t                        session;
    ngx_shm_zone_t                   *session_zone;
    ngx_str_t                         revoke_uri;
    ngx_array_t                      *keep;
    ngx_http_tokenrefresh_session_conf_t  session_conf;

    /* said once per worker: a token location that is not internal, a
     * location whose upstream request got no token variable */
    unsigned                          warned_open:1;
    unsigned                          warned_unused:1;
};


/* what the store hands to a request, copied into its pool */
typedef struct {
    ngx_uint_t                        action;
    ngx_http_tokenrefresh_ref_t       ref;
    ngx_uint_t                        seq;
    ngx_uint_t                        generation;
    ngx_uint_t                        lease_seq;
    ngx_uint_t                        grant;
    ngx_str_t                         token;          /* "Bearer <token>" */
    ngx_str_t                         refresh_token;
    ngx_str_t                         access_token;   /* for the refresh */
    ngx_str_t                         kept;           /* a session's */
    u_char                            refresh_digest
                                          [NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    ngx_uint_t                        status;
    ngx_msec_t                        retry_after;
    unsigned                          no_grant:1;
    unsigned                          sync:1;     /* the fleet's check */
} ngx_http_tokenrefresh_acquire_t;


/* a copy of a credential's state, for the status page */
typedef struct {
    ngx_str_t                         name;
    ngx_str_t                         token;
    ngx_uint_t                        has_refresh;
    int64_t                           issued;
    int64_t                           expires;
    ngx_uint_t                        generation;
    ngx_uint_t                        fleet_generation;
    ngx_uint_t                        rejected;
    ngx_pid_t                         lease_pid;
    ngx_msec_t                        lease_left;
    ngx_uint_t                        lease_grant;
    ngx_uint_t                        fails;
    ngx_uint_t                        failed;
    ngx_msec_t                        retry_in;
    ngx_uint_t                        last_outcome;
    ngx_uint_t                        last_grant;
    ngx_msec_t                        last_duration;
    time_t                            last_time;
    ngx_uint_t                        waiting;
    ngx_uint_t                        login;
    ngx_http_tokenrefresh_counters_t  counters;
} ngx_http_tokenrefresh_info_t;


typedef struct {
    ngx_uint_t                        size;
    ngx_uint_t                        used;
    ngx_uint_t                        count;
    ngx_uint_t                        evictions;
    ngx_uint_t                        nomem;
    ngx_uint_t                        kept;
    ngx_uint_t                        unknown;
    ngx_uint_t                        sessions;
    ngx_uint_t                        sessions_created;
    ngx_uint_t                        sessions_refused;
    ngx_uint_t                        sessions_idle;
    ngx_uint_t                        sessions_expired;
    ngx_uint_t                        sessions_logout;
    ngx_uint_t                        sessions_ended;
    ngx_uint_t                        sessions_evicted;
    ngx_uint_t                        fleet;          /* redis= */
    ngx_http_tokenrefresh_fleet_stats_t  fleet_stats;
    ngx_array_t                      *credentials;   /* named ones only */
} ngx_http_tokenrefresh_zone_info_t;


/* a token response, parsed and validated */
typedef struct {
    ngx_str_t                         access_token;
    ngx_str_t                         refresh_token;
    int64_t                           issued;
    int64_t                           expires;
} ngx_http_tokenrefresh_token_t;


/*
 * One refresh or login in flight.  It lives in the pool of the worker's
 * own request (ngx_http_tokenrefresh_task.c), from which the token
 * subrequest is issued, and is settled exactly once.
 */

typedef struct {
    ngx_http_request_t               *request;      /* the subrequest */
    ngx_http_request_t               *parent;       /* the worker's own */
    ngx_http_tokenrefresh_zone_t     *zone;
    ngx_http_tokenrefresh_loc_conf_t *lcf;
    ngx_http_tokenrefresh_ref_t       ref;
    ngx_uint_t                        lease_seq;
    ngx_uint_t                        grant;
    ngx_str_t                         name;
    ngx_str_t                         log_name;     /* printable */
    ngx_str_t                         refresh_token;
    ngx_str_t                         access_token;
    ngx_str_t                         kept;         /* a session's values */
    u_char                            digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    ngx_http_tokenrefresh_format_t    format;
    ngx_buf_t                        *body;
    ngx_uint_t                        status;
    ngx_msec_t                        retry_after;
    ngx_msec_t                        start;
    int64_t                           asked;        /* wall clock */
    ngx_event_t                       deadline;
    ngx_event_t                       run;
    ngx_queue_t                       queue;
    ngx_http_post_subrequest_t        ps;

    /* the fleet's lease (ngx_http_tokenrefresh_fleet.c) */
    void                             *fleet;
    ngx_event_t                       fleet_poll;
    uint32_t                          fleet_seen;   /* its generation then */
    uint32_t                          fleet_known;  /* this node's */
    uint32_t                          fleet_epoch;  /* when it asked */
    ngx_msec_t                        fleet_held_until;
    u_char                            owner[64];
    size_t                            owner_len;
    unsigned                          fleet_waiting:1;  /* not sent yet */
    unsigned                          fleet_lease:1;
    unsigned                          fleet_adopt:1;
    unsigned                          fleet_away:1;
    unsigned                          fleet_held:1;
    unsigned                          fleet_sync:1; /* a check, not a lease */
    unsigned                          fleet_again:1; /* news while asking */

    unsigned                          done:1;
    unsigned                          complete:1;
    unsigned                          too_big:1;
    unsigned                          format_set:1;
    unsigned                          session:1;
} ngx_http_tokenrefresh_refresh_t;


typedef struct ngx_http_tokenrefresh_park_s  ngx_http_tokenrefresh_park_t;


/*
 * Per client request.  A replay runs in place, so the context stays;
 * an internal redirect or an error_page starts a new pass, and the
 * context is found again through its pool cleanup.
 */

typedef struct {
    ngx_http_request_t               *request;
    ngx_http_tokenrefresh_zone_t     *zone;
    ngx_str_t                         name;
    ngx_str_t                         log_name;     /* printable */

    ngx_http_tokenrefresh_ref_t       ref;
    ngx_uint_t                        seq;
    ngx_uint_t                        generation;
    ngx_str_t                         token;
    ngx_str_t                         authorization;
    uint32_t                          hash;

    /* what the first pass had, for the replay */
    size_t                            limit_rate;

    /* the upstream that got the token, for a rejection seen late */
    ngx_http_upstream_t              *upstream;
    ngx_http_tokenrefresh_loc_conf_t *lcf;

    /* a replay resumes from the posted requests: never fails to post */
    ngx_http_posted_request_t         posted;

    ngx_http_tokenrefresh_park_t     *park;
    ngx_msec_t                        wait_start;
    ngx_msec_t                        wait_deadline;
    ngx_msec_t                        waited;

    ngx_uint_t                        outcome;

    unsigned                          attached:1;
    unsigned                          parked:1;
    unsigned                          waiting:1;
    unsigned                          leader:1;
    unsigned                          sent:1;
    unsigned                          replayed:1;
    unsigned                          replaying:1;
    unsigned                          recorded:1;
    unsigned                          kept:1;
    unsigned                          limit_rate_set:1;

    /* a user's session: the name is its handle's digest */
    unsigned                          session:1;

    /* the session's last use is due in the journal */
    unsigned                          touch:1;

    /* an unknown session was asked of the fleet */
    unsigned                          fleet_asked:1;

    /* a login answer being read (ngx_http_tokenrefresh_capture.c) */
    void                             *capture;

    /* a logout in progress (ngx_http_tokenrefresh_session.c) */
    void                             *logout;
} ngx_http_tokenrefresh_ctx_t;


/* where a waiting request sits; allocated only for those that wait */
struct ngx_http_tokenrefresh_park_s {
    ngx_queue_t                       queue;
    ngx_event_t                       event;
    ngx_http_tokenrefresh_ctx_t      *ctx;

    /* when it last looked whether the lease holder is alive */
    ngx_msec_t                        checked;
};


/* ngx_http_tokenrefresh_module.c */
extern const char *ngx_http_tokenrefresh_grant_names[];
extern ngx_uint_t ngx_http_tokenrefresh_phase;
ngx_http_tokenrefresh_ctx_t *ngx_http_tokenrefresh_find_ctx(
    ngx_http_request_t *r);
ngx_int_t ngx_http_tokenrefresh_keep_ctx(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx);
int64_t ngx_http_tokenrefresh_now(void);
u_char *ngx_http_tokenrefresh_printable(u_char *dst, u_char *src,
    size_t len);
size_t ngx_http_tokenrefresh_printable_len(u_char *src, size_t len);
void ngx_http_tokenrefresh_arm_flush(void);
ngx_int_t ngx_http_tokenrefresh_set_retry_after(ngx_http_request_t *r,
    ngx_msec_t delay);
ngx_int_t ngx_http_tokenrefresh_add_header_out(ngx_http_request_t *r,
    char *key, ngx_str_t *value);
ngx_shm_zone_t *ngx_http_tokenrefresh_use_zone(ngx_conf_t *cf,
    ngx_str_t *name);
void ngx_http_tokenrefresh_flush_all(void);

/* printable ASCII but the quote and the backslash */
#define ngx_http_tokenrefresh_plain(c)                                        \
    ((c) >= 0x20 && (c) < 0x7f && (c) != '"' && (c) != '\\')

/* a UTF-8 character that is not a C1 control (U+0080 to U+009F) */
#define ngx_http_tokenrefresh_utf8_shown(p)                                   \
    ((p)[0] != 0xc2 || (p)[1] >= 0xa0)

/* ngx_http_tokenrefresh_store.c */
ngx_int_t ngx_http_tokenrefresh_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_int_t ngx_http_tokenrefresh_acquire(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf,
    ngx_http_tokenrefresh_acquire_t *res);
ngx_int_t ngx_http_tokenrefresh_store(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_http_tokenrefresh_token_t *tok, ngx_log_t *log);
ngx_int_t ngx_http_tokenrefresh_fail(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_uint_t outcome, ngx_str_t *reason, ngx_log_t *log);
void ngx_http_tokenrefresh_release(ngx_http_tokenrefresh_refresh_t *rf);
void ngx_http_tokenrefresh_release_lease(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_ref_t *ref, ngx_uint_t lease_seq);
ngx_uint_t ngx_http_tokenrefresh_superseded(
    ngx_http_tokenrefresh_zone_t *zone);
ngx_uint_t ngx_http_tokenrefresh_changed(ngx_http_tokenrefresh_ctx_t *ctx);
ngx_uint_t ngx_http_tokenrefresh_reject(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf, ngx_uint_t replay,
    ngx_log_t *log);
void ngx_http_tokenrefresh_flush_hits(ngx_http_tokenrefresh_loc_conf_t *tlcf);
ngx_int_t ngx_http_tokenrefresh_snapshot(ngx_http_tokenrefresh_zone_t *zone,
    ngx_pool_t *pool, ngx_http_tokenrefresh_zone_info_t *zi);
ngx_int_t ngx_http_tokenrefresh_control(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_uint_t forget);
void ngx_http_tokenrefresh_spend(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest);
ngx_int_t ngx_http_tokenrefresh_restore(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_http_tokenrefresh_token_t *tok,
    ngx_uint_t generation, u_char *seed, ngx_http_tokenrefresh_session_t *ss,
    ngx_log_t *log);
void ngx_http_tokenrefresh_forget_all(ngx_http_tokenrefresh_zone_t *zone);
void ngx_http_tokenrefresh_handover_end(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node);
void ngx_http_tokenrefresh_remove(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_uint_t session);
ngx_uint_t ngx_http_tokenrefresh_spent(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest);
ngx_http_tokenrefresh_node_t *ngx_http_tokenrefresh_node_of(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name, ngx_uint_t session);
ngx_int_t ngx_http_tokenrefresh_hand_in(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_node_t *node, ngx_http_tokenrefresh_token_t *tok,
    ngx_uint_t outcome, ngx_uint_t grant, u_char *sent);
void ngx_http_tokenrefresh_seed(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log);
void ngx_http_tokenrefresh_account_wait(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_uint_t failed);
u_char *ngx_http_tokenrefresh_node_label(u_char *dst,
    ngx_http_tokenrefresh_node_t *node);
u_char *ngx_http_tokenrefresh_session_label(u_char *dst, u_char *digest);
ngx_int_t ngx_http_tokenrefresh_session_create(
    ngx_http_tokenrefresh_zone_t *zone, u_char *digest,
    ngx_http_tokenrefresh_token_t *tok, u_char *subject, ngx_str_t *kept,
    int64_t created, uint32_t fleet_gen, ngx_log_t *log);
ngx_int_t ngx_http_tokenrefresh_session_end(ngx_http_tokenrefresh_zone_t *zone,
    u_char *digest, ngx_pool_t *pool, ngx_str_t *refresh_token,
    ngx_str_t *kept);
ngx_uint_t ngx_http_tokenrefresh_session_end_all(
    ngx_http_tokenrefresh_zone_t *zone, u_char *subject, u_char *fp,
    size_t fp_len);

/* ngx_http_tokenrefresh_handover.c */
ngx_shm_zone_t *ngx_http_tokenrefresh_handover_conf(ngx_conf_t *cf);
ngx_int_t ngx_http_tokenrefresh_adopt(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log);
void ngx_http_tokenrefresh_commit(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log);
ngx_uint_t ngx_http_tokenrefresh_handed(ngx_http_tokenrefresh_zone_t *zone);
ngx_int_t ngx_http_tokenrefresh_init_handover(ngx_cycle_t *cycle);
void ngx_http_tokenrefresh_hand_over(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_http_tokenrefresh_token_t *tok, ngx_uint_t outcome, ngx_log_t *log);
ngx_uint_t ngx_http_tokenrefresh_take_over(
    ngx_http_tokenrefresh_zone_t *zone, ngx_http_tokenrefresh_node_t *node,
    ngx_log_t *log);

/* ngx_http_tokenrefresh_records.c */
#define NGX_HTTP_TOKENREFRESH_CONTENT    "TRS3"
#define NGX_HTTP_TOKENREFRESH_OP_PUT     1
#define NGX_HTTP_TOKENREFRESH_OP_GONE    2
#define NGX_HTTP_TOKENREFRESH_OP_SPENT   3

typedef struct {
    u_char                           *pos;
    u_char                           *last;
} ngx_http_tokenrefresh_reader_t;


typedef struct {
    u_char                           *data;
    size_t                            len;
    ngx_str_t                         name;
    ngx_str_t                         access;
    ngx_str_t                         refresh;
    int64_t                           created;
    int64_t                           last;
    ngx_uint_t                        session;
} ngx_http_tokenrefresh_scan_t;


/* a snapshot's content and the journals after it, merged */
typedef struct {
    u_char                           *key;
    u_char                           *old_key;     /* or NULL */
    ngx_str_t                         aad;         /* the journal's */
    size_t                            max_token_size;
    int64_t                           now;
    int64_t                           idle;
    int64_t                           lifetime;
    ngx_str_t                         snapshot;    /* opened, or empty */
    ngx_str_t                         journal[2];  /* .old, then current */

    ngx_str_t                         out;         /* malloc()ed */
    uint64_t                          floor;       /* the snapshot's */
    uint64_t                          seq;         /* the highest */
    size_t                            good[2];     /* up to a torn frame */
    ngx_uint_t                        frames;
    ngx_uint_t                        held;        /* in the snapshot */
    ngx_uint_t                        count;
    ngx_uint_t                        sessions;
    ngx_uint_t                        expired;
    const char                       *failed;
} ngx_http_tokenrefresh_merge_t;


size_t ngx_http_tokenrefresh_record_len(ngx_http_tokenrefresh_node_t *tn);
u_char *ngx_http_tokenrefresh_record_write(u_char *p,
    ngx_http_tokenrefresh_node_t *tn);
ngx_int_t ngx_http_tokenrefresh_record_scan(
    ngx_http_tokenrefresh_reader_t *rd, size_t max_token_size,
    ngx_uint_t legacy, ngx_http_tokenrefresh_scan_t *rec);
ngx_int_t ngx_http_tokenrefresh_merge(ngx_http_tokenrefresh_merge_t *m);
void ngx_http_tokenrefresh_merge_free(ngx_http_tokenrefresh_merge_t *m);
u_char *ngx_http_tokenrefresh_put(u_char *p, uint64_t v, size_t n);
ngx_int_t ngx_http_tokenrefresh_get(ngx_http_tokenrefresh_reader_t *rd,
    uint64_t *v, size_t n);
ngx_int_t ngx_http_tokenrefresh_get_str(ngx_http_tokenrefresh_reader_t *rd,
    ngx_str_t *s, size_t lenlen, size_t max);

/* ngx_http_tokenrefresh_journal.c */
ngx_int_t ngx_http_tokenrefresh_journal_init(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone);
ngx_int_t ngx_http_tokenrefresh_journal_exit(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone);
uint64_t ngx_http_tokenrefresh_journal_seq(ngx_http_tokenrefresh_shctx_t *sh);
ngx_int_t ngx_http_tokenrefresh_journal_put(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name, ngx_uint_t session,
    u_char *spent, void (*handler)(void *data, ngx_int_t rc), void *data,
    ngx_log_t *log);
ngx_int_t ngx_http_tokenrefresh_journal_fold(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *content, ngx_log_t *log);
ngx_int_t ngx_http_tokenrefresh_journal_read(ngx_str_t *path, u_char **data,
    size_t *len, ngx_log_t *log);
ngx_int_t ngx_http_tokenrefresh_lock_range(ngx_fd_t fd, ngx_uint_t byte,
    ngx_uint_t type);

/* ngx_http_tokenrefresh_redis.c */
ngx_int_t ngx_http_tokenrefresh_redis_addr(ngx_conf_t *cf, ngx_str_t *addr);
ngx_int_t ngx_http_tokenrefresh_redis_exit(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone);
ngx_uint_t ngx_http_tokenrefresh_redis_up(
    ngx_http_tokenrefresh_zone_t *zone);
ngx_int_t ngx_http_tokenrefresh_redis_wait(
    ngx_http_tokenrefresh_zone_t *zone, ngx_uint_t replicas,
    ngx_msec_t timeout, void (*handler)(void *data, void *reply),
    void *data);
ngx_int_t ngx_http_tokenrefresh_redis_eval(ngx_http_tokenrefresh_zone_t *zone,
    const char *script, ngx_uint_t nkeys, ngx_str_t *args, ngx_uint_t nargs,
    void (*handler)(void *data, void *reply), void *data);

/* ngx_http_tokenrefresh_fleet.c */
ngx_int_t ngx_http_tokenrefresh_fleet_lease(
    ngx_http_tokenrefresh_refresh_t *rf);
void ngx_http_tokenrefresh_fleet_connected(
    ngx_http_tokenrefresh_zone_t *zone);
void ngx_http_tokenrefresh_fleet_message(ngx_http_tokenrefresh_zone_t *zone,
    void *reply);
void ngx_http_tokenrefresh_fleet_poke(ngx_http_tokenrefresh_refresh_t *rf);
void ngx_http_tokenrefresh_fleet_synced(ngx_http_tokenrefresh_zone_t *zone,
    ngx_http_tokenrefresh_ref_t *ref, uint32_t generation, uint32_t epoch);
ngx_int_t ngx_http_tokenrefresh_fleet_heard(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name,
    uint32_t generation, ngx_uint_t session);
void ngx_http_tokenrefresh_fleet_session_new(
    ngx_http_tokenrefresh_zone_t *zone, u_char *digest);
void ngx_http_tokenrefresh_fleet_session_gone(
    ngx_http_tokenrefresh_zone_t *zone, u_char *digest);
ngx_int_t ngx_http_tokenrefresh_fleet_session_find(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx);
ngx_uint_t ngx_http_tokenrefresh_fleet_leases_elsewhere(
    ngx_http_tokenrefresh_zone_t *zone);
ngx_uint_t ngx_http_tokenrefresh_fleet_reclaim(
    ngx_http_tokenrefresh_zone_t *zone);
ngx_int_t ngx_http_tokenrefresh_fleet_claim(
    ngx_http_tokenrefresh_refresh_t *rf);
void ngx_http_tokenrefresh_fleet_pokes(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_uint_t released);
ngx_int_t ngx_http_tokenrefresh_fleet_settle(
    ngx_http_tokenrefresh_refresh_t *rf, ngx_uint_t share,
    void (*done)(void *data), void *data);
ngx_int_t ngx_http_tokenrefresh_redis_init(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone);

/* ngx_http_tokenrefresh_state.c */
char *ngx_http_tokenrefresh_read_secret(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *out);
ngx_int_t ngx_http_tokenrefresh_open_either(ngx_pool_t *pool, u_char *key,
    u_char *old_key, ngx_str_t *aad, ngx_str_t *in, ngx_str_t *plain);
char *ngx_http_tokenrefresh_state_conf(ngx_conf_t *cf,
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *path, ngx_str_t *key,
    ngx_str_t *old_key);
ngx_int_t ngx_http_tokenrefresh_state_load(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log);
ngx_int_t ngx_http_tokenrefresh_state_save(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log);
char *ngx_http_tokenrefresh_state_name(ngx_conf_t *cf,
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name);

/* ngx_http_tokenrefresh_refresh.c */
ngx_int_t ngx_http_tokenrefresh_start(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_acquire_t *res,
    ngx_http_tokenrefresh_loc_conf_t *tlcf);
ngx_http_tokenrefresh_refresh_t *ngx_http_tokenrefresh_get_refresh(
    ngx_http_request_t *r);
void ngx_http_tokenrefresh_settle(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_uint_t outcome, ngx_http_tokenrefresh_token_t *tok,
    ngx_str_t *reason, ngx_log_t *log);
void ngx_http_tokenrefresh_cut(ngx_http_request_t *parent, char *why);
void ngx_http_tokenrefresh_exit_refreshes(void);
ngx_int_t ngx_http_tokenrefresh_init_refresh(ngx_cycle_t *cycle);
ngx_int_t ngx_http_tokenrefresh_filter_init(ngx_conf_t *cf);
ngx_int_t ngx_http_tokenrefresh_token_subrequest(ngx_http_request_t *r,
    ngx_http_request_t *sr);
ngx_int_t ngx_http_tokenrefresh_room_for(ngx_pool_t *pool, ngx_buf_t **body,
    size_t size, size_t max);
void ngx_http_tokenrefresh_format(ngx_http_request_t *r,
    ngx_http_tokenrefresh_format_t *t, ngx_http_tokenrefresh_format_t *u,
    ngx_http_tokenrefresh_format_t *f);

/* ngx_http_tokenrefresh_session.c */
ngx_int_t ngx_http_tokenrefresh_session_pass(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_loc_conf_t *tlcf);
ngx_int_t ngx_http_tokenrefresh_session_new(ngx_pool_t *pool,
    ngx_str_t *handle, u_char *digest);
ngx_int_t ngx_http_tokenrefresh_session_cookie(ngx_http_request_t *r,
    ngx_http_tokenrefresh_session_conf_t *sc, ngx_str_t *handle);
ngx_int_t ngx_http_tokenrefresh_session_ended(ngx_http_request_t *r,
    ngx_http_tokenrefresh_loc_conf_t *tlcf);
ngx_int_t ngx_http_tokenrefresh_revoke_tokens(ngx_http_request_t *r,
    ngx_str_t **refresh_token, ngx_str_t **kept);
char *ngx_http_tokenrefresh_session_zone_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_tokenrefresh_session_cookie_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_tokenrefresh_session_keep_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_tokenrefresh_session_origins_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_tokenrefresh_session_merge(ngx_conf_t *cf,
    ngx_http_tokenrefresh_loc_conf_t *prev,
    ngx_http_tokenrefresh_loc_conf_t *conf);

/* ngx_http_tokenrefresh_capture.c */
ngx_int_t ngx_http_tokenrefresh_capture_init(ngx_conf_t *cf);
ngx_int_t ngx_http_tokenrefresh_kept_value(ngx_str_t *kept, ngx_str_t *name,
    ngx_str_t *value);

/* ngx_http_tokenrefresh_rewrite.c */
ngx_int_t ngx_http_tokenrefresh_rewrite(ngx_pool_t *pool, ngx_str_t *in,
    ngx_http_tokenrefresh_pointer_t **drop, ngx_uint_t ndrop,
    ngx_str_t *member, ngx_str_t *value, ngx_str_t *out);

/* ngx_http_tokenrefresh_task.c */
ngx_http_request_t *ngx_http_tokenrefresh_task_create(ngx_http_request_t *r,
    ngx_str_t *uri);
void ngx_http_tokenrefresh_task_run(ngx_event_t *ev);
void ngx_http_tokenrefresh_task_stop(ngx_http_request_t *r);
ngx_uint_t ngx_http_tokenrefresh_task_sent(ngx_http_request_t *sr);

/* ngx_http_tokenrefresh_replay.c */
void ngx_http_tokenrefresh_record(ngx_http_tokenrefresh_ctx_t *ctx);
ngx_int_t ngx_http_tokenrefresh_replay_init(ngx_conf_t *cf);

/* ngx_http_tokenrefresh_wait.c */
void ngx_http_tokenrefresh_wait_begin(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf);
ngx_int_t ngx_http_tokenrefresh_park(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx);
void ngx_http_tokenrefresh_unpark(ngx_http_tokenrefresh_ctx_t *ctx);
void ngx_http_tokenrefresh_wake_local(void);
ngx_int_t ngx_http_tokenrefresh_init_wait(ngx_cycle_t *cycle);

/* ngx_http_tokenrefresh_json.c */
ngx_int_t ngx_http_tokenrefresh_compile_pointer(ngx_pool_t *pool,
    ngx_http_tokenrefresh_pointer_t *ptr);
const char *ngx_http_tokenrefresh_parse_response(ngx_pool_t *pool,
    u_char *data, size_t len, ngx_http_tokenrefresh_format_t *fmt,
    size_t max_token_size, int64_t now, ngx_http_tokenrefresh_token_t *tok);
const char *ngx_http_tokenrefresh_check_token(ngx_str_t *token,
    size_t max_size);
ngx_int_t ngx_http_tokenrefresh_jwt_subject(ngx_pool_t *pool,
    ngx_str_t *token, ngx_str_t *sub);
ngx_int_t ngx_http_tokenrefresh_parse_error(ngx_pool_t *pool, u_char *data,
    size_t len, ngx_http_tokenrefresh_pointer_t *ptr, ngx_str_t *code);

/* ngx_http_tokenrefresh_crypto.c */
#define NGX_HTTP_TOKENREFRESH_FP_LEN  12
void ngx_http_tokenrefresh_fingerprint(u_char *dst, u_char *data,
    size_t len);
void ngx_http_tokenrefresh_digest(u_char *dst, u_char *data, size_t len);
void ngx_http_tokenrefresh_digest_keep(void);
void ngx_http_tokenrefresh_digest_free(void);
ngx_int_t ngx_http_tokenrefresh_seal(ngx_pool_t *pool, u_char *key,
    ngx_str_t *aad, ngx_str_t *plain, ngx_str_t *out);
ngx_int_t ngx_http_tokenrefresh_open(ngx_pool_t *pool, u_char *key,
    ngx_str_t *aad, ngx_str_t *in, ngx_str_t *plain);
ngx_int_t ngx_http_tokenrefresh_seal_to(u_char *key, ngx_str_t *aad,
    ngx_str_t *plain, u_char *out);
ngx_int_t ngx_http_tokenrefresh_open_to(u_char *key, ngx_str_t *aad,
    ngx_str_t *in, ngx_str_t *plain);
ngx_int_t ngx_http_tokenrefresh_seal_frame(u_char *key, ngx_str_t *aad,
    ngx_str_t *plain, u_char *out);
ngx_int_t ngx_http_tokenrefresh_open_frame(u_char *key, ngx_str_t *aad,
    ngx_str_t *in, ngx_str_t *plain);
char *ngx_http_tokenrefresh_assertion_key(ngx_conf_t *cf,
    ngx_http_tokenrefresh_assertion_t *a, ngx_str_t *file);
ngx_int_t ngx_http_tokenrefresh_assertion(ngx_pool_t *pool,
    ngx_http_tokenrefresh_assertion_t *a, ngx_str_t *jwt);

/* ngx_http_tokenrefresh_status.c */
char *ngx_http_tokenrefresh_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_tokenrefresh_variables.c */
ngx_int_t ngx_http_tokenrefresh_add_variables(ngx_conf_t *cf);


extern ngx_module_t  ngx_http_tokenrefresh_module;


#endif /* _NGX_HTTP_TOKENREFRESH_MODULE_H_INCLUDED_ */
