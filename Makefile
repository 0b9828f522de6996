# ngx_http_tokenrefresh_module
#
#   make              build the dynamic module against Debian's nginx-dev
#   make test         run the Test::Nginx suite
#   make demo         start nginx, a mock identity provider and API, and
#                     walk through a short scenario
#   make install      install the module where Debian's nginx looks for it
#   make clean
#
# Every target installs what is missing first (scripts/setup.sh: Debian 12
# packages, and Test::Nginx from Debian unstable pinned to that package).

BUILD     ?= build
SO         = $(BUILD)/ngx_http_tokenrefresh_module.so
SOURCES    = config $(wildcard ngx_http_tokenrefresh_module/*.[ch])

MODULES_DIR   ?= /usr/lib/nginx/modules
MODULES_CONF  ?= /usr/share/nginx/modules-available
MODULES_ON    ?= /etc/nginx/modules-enabled
CONF_NAME      = mod-http-tokenrefresh.conf

.PHONY: all setup test demo install uninstall clean

all: $(SO)

setup:
	@scripts/setup.sh --check || scripts/setup.sh

$(SO): $(SOURCES) | setup
	scripts/build.sh $(BUILD)

test: $(SO)
	scripts/test.sh $(T)

demo: $(SO)
	scripts/demo.sh

install: $(SO)
	install -d $(DESTDIR)$(MODULES_DIR) $(DESTDIR)$(MODULES_CONF) \
	           $(DESTDIR)$(MODULES_ON)
	install -m 0644 $(SO) $(DESTDIR)$(MODULES_DIR)/
	echo "load_module modules/ngx_http_tokenrefresh_module.so;" \
	    > $(DESTDIR)$(MODULES_CONF)/$(CONF_NAME)
	ln -sf $(MODULES_CONF)/$(CONF_NAME) \
	    $(DESTDIR)$(MODULES_ON)/50-$(CONF_NAME)

uninstall:
	rm -f $(DESTDIR)$(MODULES_DIR)/ngx_http_tokenrefresh_module.so \
	      $(DESTDIR)$(MODULES_CONF)/$(CONF_NAME) \
	      $(DESTDIR)$(MODULES_ON)/50-$(CONF_NAME)

clean:
	rm -rf $(BUILD) t/servroot
