# Every nginx configuration shown in README.md and docs/ is loaded and
# exercised here, as written, so the documentation cannot rot.  A config
# block is preceded by "<!-- test: NAME -->"; each block below names the
# one it runs with "--- doc: NAME".  What changes on the way: load_module
# and events go (Test::Nginx provides them), the example hosts become the
# mock provider and API, https becomes http, "listen 80" a local port.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use Cwd qw(abs_path);
use File::Basename qw(dirname);

no_shuffle();

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

    return $conf;
}

add_block_preprocessor(sub {
    my $block = shift;
    my $name = $block->doc or return;
    $block->set_value('http_config', doc_config($name));
    $block->set_value('no_default_http_config', 1);
});

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



=== TEST 7: guide: a provider that nests its fields
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



=== TEST 8: guide: watching it
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
