# libmapi32 under Wine's own mapi32.dll: the provider route. Wine's builtin
# mapi32.dll stays the program's mapi32.dll (it has some 190 exports that
# libmapi32 does not) and forwards MAPIAllocateBuffer, MAPIAllocateMore and
# MAPIFreeBuffer to the library registered as the default mail client's
# DLLPathEx. See c_tests/windows/register_provider.sh for the registration.
# Included by the main Makefile after mk/windows.mk, whose variables it uses.
#
#   make windows-provider-route  register build/windows/mapi32.dll in a private
#                                prefix and prove the builtin's blocks are
#                                libmapi32's; then unregister it and watch the
#                                same client fail
#   make windows32-provider-route  the same for a 32-bit client and
#                                build/windows32/mapi32.dll (mk/windows32.mk),
#                                registered in the 32-bit view of a 64-bit
#                                prefix; needs wine32 as well as wine64

.PHONY: windows-provider-route windows-provider-route-if-available windows32-provider-route

# Part of `make test` where test-windows is: the same tools, the same rule
# for CI.
TEST_STEPS += windows-provider-route-if-available

# Linked as a MAPI client is (-lmapi32, mingw-w64's import library), so its
# MAPI calls go to whichever mapi32.dll the loader picks: Wine's builtin.
$(WIN_BUILD)/provider_route_client.exe: c_tests/windows/provider_route_client.c
	@mkdir -p $(WIN_BUILD)
	$(WIN_CC) $(WIN_CFLAGS) $< -o $@ -lmapi32

windows-provider-route: $(WIN_BUILD)/mapi32.dll $(WIN_BUILD)/provider_route_client.exe
	sh c_tests/windows/provider_route.sh $(WIN_BUILD)

windows-provider-route-if-available:
	@sh scripts/prereqs.sh run-or-skip windows-provider-route windows -- $(MAKE) --no-print-directory windows-provider-route

$(WIN32_BUILD)/provider_route_client.exe: c_tests/windows/provider_route_client.c
	@mkdir -p $(WIN32_BUILD)
	$(WIN32_CC) $(WIN_CFLAGS) $< -o $@ -lmapi32

windows32-provider-route: $(WIN32_BUILD)/mapi32.dll $(WIN32_BUILD)/provider_route_client.exe
	sh c_tests/windows/provider_route.sh $(WIN32_BUILD)
