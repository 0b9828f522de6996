# Every nginx configuration shown in README.md and docs/ is loaded and
# exercised here, as written, so the documentation cannot rot.  A config
# block is preceded by "<!-- test: NAME -->"; each block below names the
# one it runs with "--- doc: NAME".  What changes on the way: load_module
# and events go (Test::Nginx provides them), the example hosts become the
# mock provider and API, https becomes http, "listen 80" a local port.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp ();

no_shuffle();

# the keys, seeds and state files the documents name, made here
my $etc = File::Temp::tempdir('tokenrefresh-docs-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_STATE_DIR} = $etc;

sub secret_file {
    my ($name, $content) = @_;
    mkdir "$etc/seeds";
    open my $fh, '>', "$etc/$name" or die "$etc/$name: $!";
    print $fh $content;
    close $fh;
    chmod 0600, "$etc/$name";
}

secret_file('tokens.key', join('', map { sprintf '%02x', $_ * 7 } 1 .. 32));
secret_file('users.key', join('', map { sprintf '%02x', $_ * 5 } 1 .. 32));
secret_file('seeds/crm', "seed-crm-1\n");
secret_file('seeds/reports', "seed-reports-1\n");
secret_file('redis.password', "docs-redis-pw\n");

# the fleet's redis of the documents (10.0.0.5:6379), on loopback
my $redis_port = ($ENV{TEST_NGINX_MOCK_PORT} // 19850) + 40;
system('redis-server', '--port', $redis_port, '--bind', '127.0.0.1',
       '--save', '', '--appendonly', 'no', '--requirepass', 'docs-redis-pw',
       '--daemonize', 'yes', '--pidfile', "$etc/redis.pid",
       '--logfile', "$etc/redis.log") == 0
    or die "redis-server did not start";
END {
    if (open my $fh, '<', "$etc/redis.pid") {
        chomp(my $pid = <$fh>);
        kill 'KILL', $pid;
    }
}
system("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
       . "-out $etc/client.pem 2>/dev/null") == 0 or die "openssl failed";
chmod 0600, "$etc/client.pem";

my $top = dirname(abs_path(__FILE__)) . '/..';
my %docs;

for my $file ("$top/README.md", glob "$top/docs/*.md") {
    open my $fh, '<', $file or die "$file: $!";
    my $text = do { local $/; <$fh> };
    close $fh;

    # every nginx block must be tagged, or it would go untested
    while ($text =~ /(<!-- test: ([\w-]+) -->\n)?```nginx\n(.*?)```/gs) {
        my ($tag, $name, $conf) = ($1, $2, $3);
        die "an untested nginx block in $file:\n$conf" unless $tag;
        die "two doc blocks named $name" if $docs{$name};
        $docs{$name} = $conf;
    }
}

sub doc_config {
    my ($name) = @_;
    my $conf = $docs{$name} // die "no doc block named $name";

    $conf =~ s/^\s*load_module .*\n//mg;
    $conf =~ s/^\s*events\s*\{[^}]*\}\n//mg;

    if ($conf =~ /^\s*http\s*\{\n(.*)\}\s*$/s) {
        $conf = $1;
    }

    my $idp = "127.0.0.1:$ENV{TEST_NGINX_IDP_PORT}";
    my $api = "127.0.0.1:$ENV{TEST_NGINX_API_PORT}";
    my $doc = "127.0.0.1:$ENV{TEST_NGINX_DOC_PORT}";

    $conf =~ s/server idp\.example\.com:443/server $idp/g;
    $conf =~ s/server backend\.example\.com:443/server $idp/g;
    $conf =~ s/server api\.example\.com:443/server $api/g;
    $conf =~ s{https://}{http://}g;
    $conf =~ s/listen 80;/listen $doc;/g;
    $conf =~ s{/(?:etc/nginx|var/lib/nginx)/}{$etc/}g;
    $conf =~ s/10\.0\.0\.5:6379/127.0.0.1:$redis_port/g;

    return $conf;
}

add_block_preprocessor(sub {
    my $block = shift;
    my $name = $block->doc or return;
    my $conf = doc_config($name);

    # a location shown alone goes into the test's server
    if ($conf =~ /^\s*location\b/) {
        $block->set_value('config', $conf . ($block->config // ''));
        return;
    }

    $block->set_value('http_config', $conf);
    $block->set_value('no_default_http_config', 1);
});

sub etc_dir { $etc }

# requests go to the documented server
sub doc {
    my ($method, $uri, %o) = @_;
    return hit($method, $uri, port => $ENV{TEST_NGINX_DOC_PORT}, %o);
}

run_tests();

__DATA__

=== TEST 1: README: the complete configuration
--- doc: readme
--- init
mock(lifetime => 1);
my $r = main::doc(GET => '/api/orders/1');
like($r->{content}, qr/"cred":"orders".*"token_n":1\b/, 'logged in');
like(main::doc(GET => '/api/orders/2')->{content}, qr/"token_n":1\b/,
     'reused');
my $t0 = time;
wait_until(sub { time > $t0 + scaled(1.05) }, 3);
like(main::doc(GET => '/api/orders/3')->{content}, qr/"token_n":3\b/,
     'refreshed after expiry');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 2: directives: the example configuration
--- doc: directives-example
--- init
mock(lifetime => 1);
my $r = main::doc(GET => '/api/a');
like($r->{content}, qr/"cred":"orders-service"/, 'logged in');
my $t0 = time;
wait_until(sub { time > $t0 + scaled(1.05) }, 3);
like(main::doc(GET => '/api/b')->{content}, qr/"token_n":3\b/,
     'refreshed after expiry');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 3: directives: a zone with a larger token limit
--- doc: directives-zone
--- config
    location = /_login {
        internal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_IDP_PORT/token;
        proxy_set_body "grant_type=client_credentials&client_id=big";
    }

    location /api/ {
        tokenrefresh tokens big;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://127.0.0.1:$TEST_NGINX_API_PORT;
    }

    location = /status {
        tokenrefresh_status;
    }
--- init
mock(token_pad => 20000);    # 20 KB tokens: over the default 16k
like(hit(GET => '/api/a')->{content}, qr/"token_n":1\b/,
     'a 20 KB token is accepted');
like(hit(GET => '/status')->{content}, qr/"size": 10485760/, '10 MB');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 4: guide: client credentials
--- doc: guide-client-credentials
--- init
like(main::doc(GET => '/api/reports')->{content},
     qr/"cred":"reports-service".*"style":"bearer"/, 'served');
my ($login) = grep { $_->{path} eq '/oauth/token' } @{ requests() };
like($login->{body}, qr/^grant_type=client_credentials&client_id=reports-service/,
     'a client credentials grant');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 5: guide: a password login, then refresh tokens
--- doc: guide-refresh-token
--- init
mock(lifetime => 1);
like(main::doc(GET => '/api/a')->{content}, qr/"cred":"kiosk-42"/,
     'logged in with the password grant');
my $t0 = time;
wait_until(sub { time > $t0 + scaled(1.05) }, 3);
like(main::doc(GET => '/api/b')->{content}, qr/"token_n":3\b/, 'refreshed');
--- request
GET /calls
--- response_body
calls=2 password=1 refresh_token=1
--- no_error_log
[error]



=== TEST 6: guide: a custom login API, one credential per tenant, the bare token
--- doc: guide-custom-login
--- init
mock(jwt => 1, lifetime => 2);    # JWTs: the "exp" claim tells the expiry
my $t0 = time;
my $r = main::doc(GET => '/v1/orders', headers => { Tenant => 'acme' });
like($r->{content}, qr/"cred":"ops\@acme.example".*"style":"bare"/,
     'acme logged in, the bare token');
$r = main::doc(GET => '/v1/orders', headers => { Tenant => 'globex' });
like($r->{content}, qr/"cred":"it\@globex.example"/, 'globex: its own');
is(main::doc(GET => '/v1/orders', headers => { Tenant => 'evil' })->{status},
   403, 'an unknown tenant: 403');
is(main::doc(GET => '/v1/orders')->{status}, 403, 'no tenant: 403');
wait_until(sub { time > int($t0) + scaled(2) + 1.05 }, 5);
like(main::doc(GET => '/v1/x', headers => { Tenant => 'acme' })->{content},
     qr/"cred":"ops\@acme.example".*"token_n":5\b/,
     'after expiry: the custom refresh');
--- request
GET /calls
--- response_body
calls=3 login=2 refresh=1
--- no_error_log
[error]



=== TEST 7: guide: a refresh with both tokens
--- doc: guide-refresh-both
--- http_config
    upstream backend { server 127.0.0.1:$TEST_NGINX_IDP_PORT; }
--- config
    location = /_login {
        internal;
        tokenrefresh_json_access_token  /token;
        tokenrefresh_json_refresh_token /refreshToken;
        proxy_set_header Content-Type application/json;
        proxy_set_body '{"email":"$tokenrefresh_credential","password":"secret-$tokenrefresh_credential"}';
        proxy_pass http://backend/api/tokens;
    }

    location /v1/ {
        tokenrefresh         tokens ops@acme.example;
        tokenrefresh_login   /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(refresh_needs_access => 1);
is(hit(GET => '/v1/a')->{status}, 200, 'logged in');
revoke();
my $r = hit(GET => '/v1/b');
is($r->{status}, 200, 'refreshed with both tokens, and replayed');
my ($refresh) = grep { $_->{path} eq '/api/tokens/refresh' } @{ requests() };
like($refresh->{body}, qr/^\{"token":"at-1-\w+","refreshToken":"rt-2-\w+"\}$/,
     'the body had both');
--- request
GET /calls
--- response_body
calls=2 login=1 refresh=1
--- no_error_log
[error]



=== TEST 8: guide: a provider that nests its fields
--- doc: guide-nested
--- init
mock(lifetime => 1);
like(main::doc(GET => '/api/feed')->{content}, qr/"cred":"partner-feed"/,
     'logged in');
my $t0 = time;
wait_until(sub { time > $t0 + scaled(1.05) }, 3);
like(main::doc(GET => '/api/feed')->{content}, qr/"token_n":3\b/,
     'refreshed at the absolute expiry');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 9: guide: watching it
--- doc: guide-status
--- init
main::doc(GET => '/api/a');
my $s = main::doc(GET => '/tokenrefresh')->{content};
like($s, qr/"reports-service"/, 'the JSON status');
like(main::doc(GET => '/metrics')->{content},
     qr/^tokenrefresh_requests_total\{zone="tokens",credential="reports-service"\} 1$/m,
     'the metrics');
my $r = main::doc(POST => '/tokenrefresh?zone=tokens&credential=reports-service&action=refresh');
like($r->{content}, qr/"result":"done"/, 'a forced refresh');
my $log = "$Test::Nginx::Util::ServRoot/logs/tokens.log";
my @lines;
ok(wait_until(sub {
    open my $fh, '<', $log or return 0;
    @lines = <$fh>;
    return @lines >= 1;
}, 5), 'the access log');
like($lines[0], qr/"GET \/api\/a HTTP\/1.1" 200 token=refreshed wait=\d+\.\d{3}$/,
     'with the outcome and the wait');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 10: directives: a zone with a state file
--- doc: directives-zone-state
--- config
    location = /_login {
        internal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_IDP_PORT/token;
        proxy_set_body "grant_type=client_credentials&client_id=kept";
    }

    location /api/ {
        tokenrefresh tokens kept;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://127.0.0.1:$TEST_NGINX_API_PORT;
    }
--- init
my $state = main::etc_dir() . '/tokens.state';
unlink $state;
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
ok(wait_until(sub { -s $state }), 'the state file was written');
is(sprintf('%o', (stat $state)[2] & 07777), '600', 'mode 0600');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 11: directives: a seed
--- doc: directives-seed
--- config
    location = /_refresh {
        internal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_IDP_PORT/token;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
    }

    location /api/ {
        tokenrefresh tokens reports;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://127.0.0.1:$TEST_NGINX_API_PORT;
    }
--- init
control('grant', { cred => 'reports', refresh_token => 'seed-reports-1' });
--- request
GET /api/a
--- response_body_like: "cred":"reports"
--- error_log eval
qr/credential "reports" seeded from/



=== TEST 12: directives: a client assertion in the token location
--- doc: directives-assertion
--- config
    location /api/ {
        tokenrefresh tokens orders-service;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
my ($login) = grep { $_->{path} eq '/oauth/token' } @{ requests() };
like($login->{body}, qr/&client_assertion=[\w-]+\.[\w-]+\.[\w-]+$/,
     'with a signed JWT');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 13: guide: rotating refresh tokens, a seed, restarts
--- doc: guide-rotation
--- init
mock(rotate => 1, lifetime => 1);
control('grant', { cred => 'crm', refresh_token => 'seed-crm-1' });
like(main::doc(GET => '/crm/a')->{content}, qr/"cred":"crm"/,
     'the seed was refreshed');
my $expires = time + scaled(1);
restart_nginx('QUIT');
wait_until(sub { time > $expires + 0.05 }, 3);
like(main::doc(GET => '/crm/b')->{content}, qr/"token_n":\d+/,
     'refreshed with the rotated token after a restart');
is(stats()->{reuse}, 0, 'no refresh token sent twice');
--- request
GET /calls
--- response_body
calls=2 refresh_token=2
--- no_error_log
[error]



=== TEST 14: guide: signed client assertions
--- doc: guide-assertion
--- init
like(main::doc(GET => '/api/a')->{content}, qr/"cred":"ledger-gateway"/,
     'logged in');
my ($login) = grep { $_->{path} eq '/oauth/token' } @{ requests() };
like($login->{body}, qr/client_assertion=[\w-]+\.[\w-]+\.[\w-]+$/,
     'with a signed JWT');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 15: directives: proxy_cache, one credential per tenant
--- doc: directives-cache
--- http_config
    map $http_x_tenant $tenant { acme acme; globex globex; default ""; }
    proxy_cache_path $TEST_NGINX_STATE_DIR/doc-cache keys_zone=api_cache:1m;
--- config
    add_header X-Cache $upstream_cache_status always;

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }
--- init
my @r = map { hit(GET => '/api/a', headers => { 'X-Tenant' => $_ }) }
        qw(acme acme globex);
is(join(' ', map { $_->{headers}{'x-cache'} } @r), 'MISS HIT MISS',
   'cached per credential');
like($r[1]{content}, qr/"cred":"acme"/, 'acme gets its own answer');
like($r[2]{content}, qr/"cred":"globex"/, 'and globex its own');
--- request
GET /calls
--- response_body
calls=2 client_credentials=2
--- no_error_log
[error]



=== TEST 16: guide: users' sessions, a native app
--- doc: guide-sessions
--- init
mock(rotate => 1);
my $r = main::doc(POST => '/api/tokens',
                  headers => { 'Content-Type' => 'application/json',
                               'Accept-Language' => 'pt' },
                  body => '{"email":"kim@example.com","password":"secret-kim@example.com"}');
is($r->{status}, 201, 'logged in through nginx');
unlike($r->{content}, qr/"token"|refreshToken/, 'no token in the answer');
my ($handle) = $r->{content} =~ /"session":"([A-Za-z0-9_-]{43})"/;
ok($handle, 'a handle');
like($r->{content}, qr/"user":\{/, 'the rest of the answer');
my $s = { 'X-Session' => $handle };
like(main::doc(GET => '/api/me', headers => $s)->{content}, qr/"cred":"kim\@example.com"/,
     "the user's token");
revoke();
$r = main::doc(GET => '/api/me', headers => $s);
is($r->{status}, 200, 'a revoked token: refreshed and replayed, the app saw nothing');
my ($rf) = grep { $_->{path} eq '/api/tokens/refresh' } @{ requests() };
is($rf->{headers}{'accept-language'}, 'pt', 'the kept locale');
is(main::doc(POST => '/api/logout', headers => $s)->{status}, 204, 'logout');
$r = main::doc(GET => '/api/me', headers => $s);
is($r->{status}, 401, 'then the session has ended');
like($r->{content}, qr/"error":"session_ended"/, 'with the documented body');
--- request
GET /calls
--- response_body
calls=3 login=1 refresh=1 revoke=1
--- no_error_log
[error]




=== TEST 17: directives: a zone of a fleet
--- doc: directives-fleet
--- config
    location = /_login {
        internal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_IDP_PORT/token;
        proxy_set_body "grant_type=client_credentials&client_id=fleet";
    }

    location /api/ {
        tokenrefresh tokens fleet;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://127.0.0.1:$TEST_NGINX_API_PORT;
    }

    location = /status {
        tokenrefresh_status;
    }
--- init
ok(wait_until(sub { (hit(GET => '/status')->{content} // '')
                    =~ /"connected_workers": 1/ }, 10),
   'connected to the fleet\'s redis, with its password');
is(hit(GET => '/api/a')->{status}, 200, 'logged in, through the fleet');
like(hit(GET => '/status')->{content}, qr/"leases": 1/, 'with its lease');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 18: guide: a fleet of gateways
--- doc: guide-fleet
--- init
# the state file of the rotation's block has a token the mock forgot
stop_nginx('KILL');
unlink glob(main::etc_dir() . '/tokens.state*');
start_nginx();
mock(rotate => 1);
control('grant', { cred => 'crm', refresh_token => 'seed-crm-1' });
like(main::doc(GET => '/crm/a')->{content}, qr/"cred":"crm"/,
     'the seed was refreshed, through the fleet');
like(main::doc(GET => '/tokenrefresh-status')->{content},
     qr/"fleet": \{\s*"connected_workers": 1,.*"leases": 1,.*"stored": 1/s,
     'the status page shows the fleet');
is(stats()->{reuse}, 0, 'no refresh token sent twice');
--- request
GET /calls
--- response_body
calls=1 refresh_token=1
--- no_error_log
[error]
