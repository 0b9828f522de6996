# Hostile names and files: credential names that are not UTF-8 keep the
# status page valid JSON and valid Prometheus text and are escaped in the
# error log; the state file is never followed through a symlink, its
# directory must exist at "nginx -t", and a long zone name is safe.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();
use Encode ();

master_on();
no_shuffle();

my $dir = File::Temp::tempdir('tokenrefresh-h-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_STATE_DIR} = $dir;

{
    open my $fh, '>', "$dir/key" or die;
    print $fh join('', map { sprintf '%02x', int rand 256 } 1 .. 32), "\n";
    close $fh;
    chmod 0600, "$dir/key";
}

# a root-owned file that a symlink points to, readable by others
{
    open my $fh, '>', "$dir/victim" or die;
    print $fh "not a state file\n";
    close $fh;
    chmod 0644, "$dir/victim";
    symlink "$dir/victim", "$dir/link.state" or die "symlink: $!";
}

$ENV{TEST_NGINX_LONG_ZONE} = 'z' x 300;

# A strict reader of the Prometheus text format (0.0.4): every line is a
# comment, a HELP or TYPE line, or a sample whose label values are valid
# UTF-8 with only \\, \" and \n escaped.
sub prometheus_errors {
    my ($text) = @_;
    my @err;
    my $n = 0;
    for my $line (split /\n/, $text) {
        $n++;
        my $copy = $line;
        if (!eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK); 1 }) {
            push @err, "line $n: not UTF-8";
            next;
        }
        next if $line =~ /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* /;
        next if $line =~ /^#/ || $line eq '';
        my $re_value = qr/"(?:[^"\\\n]|\\[\\"n])*"/;
        if ($line !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*
                      (\{([a-zA-Z_][a-zA-Z0-9_]*=$re_value)
                         (,[a-zA-Z_][a-zA-Z0-9_]*=$re_value)*,?\})?
                      \x20(-?[0-9.eE+-]+|NaN|[+-]Inf)(\x20-?\d+)?$/x)
        {
            push @err, "line $n: $line";
        }
    }
    return @err;
}

{
    no strict 'refs';
    *{"Test::Nginx::Util::prometheus_errors"} = \&prometheus_errors;
    *Test::Nginx::Util::state_dir = sub { $dir };
}

run_tests();

__DATA__

=== TEST 1: credential names that are not UTF-8: valid JSON, valid Prometheus text, escaped in the log
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=x";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens $http_x_tenant;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /status {
        tokenrefresh_status;
    }

    location = /metrics {
        tokenrefresh_status prometheus;
    }
--- init
for my $name ("bad\xff\xfename", "quo\"te\\back", "line\x01ctl", "caf\xc3\xa9") {
    # raw bytes in a header: HTTP::Tiny refuses to send them
    is(collect(fire(GET => '/api/a', headers => { 'X-Tenant' => $name }))->{status},
       200, 'served');
}
my $json = hit(GET => '/status')->{content};
my $st = eval { JSON::PP->new->utf8->decode($json) };
ok($st, 'the JSON status decodes as strict UTF-8 JSON') or diag($@);
is(scalar keys %{ $st->{zones}{tokens}{credentials} }, 4, 'four credentials');
ok(exists $st->{zones}{tokens}{credentials}{"caf\x{e9}"}, 'a UTF-8 name stays itself');
my @err = prometheus_errors(hit(GET => '/metrics')->{content});
is(scalar @err, 0, 'the Prometheus text passes a strict reader')
    or diag(join "\n", @err);
# nginx's own debug lines show the request headers as they came
my @bad = grep { /tokenrefresh:/ && /\xff|\x01/ } error_log_since(0);
is(scalar @bad, 0, "no raw bytes in the module's lines") or diag(@bad);
ok(scalar(grep { /tokenrefresh: .*credential "bad\\xff\\xfename"/ } error_log_since(0)),
   'the name shown escaped');
--- request
GET /calls
--- response_body
calls=4 client_credentials=4



=== TEST 2: a state file that is a symlink is refused and nothing is chmodded through it
--- http_config
    tokenrefresh_zone ln:1m state=$TEST_NGINX_STATE_DIR/link.state
                            key=$TEST_NGINX_STATE_DIR/key;
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=x";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh ln billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(sprintf('%o', (stat "$ENV{TEST_NGINX_STATE_DIR}/victim")[2] & 07777), '644',
   'the file the symlink points to keeps its mode');
is(hit(GET => '/api/a')->{status}, 200, 'nginx serves');
is(sprintf('%o', (stat "$ENV{TEST_NGINX_STATE_DIR}/victim")[2] & 07777), '644',
   'still 0644 after a save');
my $victim = do { local (@ARGV, $/) = "$ENV{TEST_NGINX_STATE_DIR}/victim"; <> };
is($victim, "not a state file\n", 'and its content is untouched');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- error_log
is a symbolic link



=== TEST 3: the state file's directory must exist: nginx -t says so with file and line
--- http_config
    tokenrefresh_zone nd:1m state=$TEST_NGINX_STATE_DIR/nosuchdir/x.state
                            key=$TEST_NGINX_STATE_DIR/key;
--- config
--- must_die
--- error_log eval
qr/the directory of the state file ".*nosuchdir\/x\.state" does not exist .* in .*nginx\.conf:\d+/



=== TEST 4: a zone name of 300 bytes with a state file works
--- http_config
    tokenrefresh_zone $TEST_NGINX_LONG_ZONE:1m state=$TEST_NGINX_STATE_DIR/long.state
                                          key=$TEST_NGINX_STATE_DIR/key;
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=x";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh $TEST_NGINX_LONG_ZONE billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'served');
ok(wait_until(sub { -s "$ENV{TEST_NGINX_STATE_DIR}/long.state" }),
   'the state file was written');
restart_nginx('QUIT');
like(hit(GET => '/api/b')->{content}, qr/"token_n":1\b/,
     'the token read back after a restart');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]
[crit]
