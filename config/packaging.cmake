# SPDX-License-Identifier: Apache-2.0
# Service install and packaging (included at the end of the top-level
# CMakeLists.txt):
#   - the systemd units (config/*.service) and the configuration
#     (/etc/kms/kms.conf, /etc/kms/kms-mailbox.conf: the examples, conffiles
#     in the .deb; the examples again under share/doc/ims-kms/examples);
#   - the man pages, made from each binary's --help by help2man plus
#     config/man/<binary>.h2m (target `man`, part of ALL when help2man is
#     found);
#   - CPack: `cpack -G DEB` makes ims-kms_<version>_<arch>.deb with the
#     maintainer scripts of config/deb/.
#
# Paths follow the install prefix: with the prefix /usr (the .deb) the
# configuration is in /etc/kms and the units say /usr/sbin/kmsd -c
# /etc/kms/kms.conf, as in config/*.service; with any other prefix P it is
# P/etc/kms and P/sbin, and the units installed are rewritten to match.

include(GNUInstallDirs)

set(KMS_PKG_SRC ${CMAKE_CURRENT_LIST_DIR})          # config/
set(KMS_PKG_BIN ${CMAKE_BINARY_DIR}/packaging)

# ---------------------------------------------------------------- install
install(FILES ${KMS_PKG_SRC}/kms.conf.example ${KMS_PKG_SRC}/kms-mailbox.conf.example
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# The configuration and the units: their directory and their contents
# depend on the prefix given at install time (cmake --install --prefix,
# cpack), so both are worked out then. file(INSTALL) adds $DESTDIR itself.
install(CODE "
  set(_src \"${KMS_PKG_SRC}\")
  set(_stage \"${KMS_PKG_BIN}/units\")
  set(_sbin \"${CMAKE_INSTALL_SBINDIR}\")
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(_etc /etc)
  else()
    set(_etc \"\${CMAKE_INSTALL_PREFIX}/etc\")
  endif()
  # An existing configuration is the operator's: kept (the .deb's staging
  # directory is always empty; dpkg handles conffiles itself).
  file(MAKE_DIRECTORY \"\${_stage}/conf\")
  foreach(_c kms kms-mailbox)
    if(EXISTS \"\$ENV{DESTDIR}\${_etc}/kms/\${_c}.conf\")
      message(STATUS \"Kept: \$ENV{DESTDIR}\${_etc}/kms/\${_c}.conf\")
    else()
      configure_file(\"\${_src}/\${_c}.conf.example\" \"\${_stage}/conf/\${_c}.conf\" COPYONLY)
      file(INSTALL DESTINATION \"\${_etc}/kms\" TYPE FILE
           PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
           FILES \"\${_stage}/conf/\${_c}.conf\")
    endif()
  endforeach()
  foreach(_u kmsd.service kms-mailbox.service)
    file(READ \"\${_src}/\${_u}\" _t)
    string(REPLACE \"/usr/sbin/\" \"\${CMAKE_INSTALL_PREFIX}/\${_sbin}/\" _t \"\${_t}\")
    string(REPLACE \"/etc/kms/\" \"\${_etc}/kms/\" _t \"\${_t}\")
    file(WRITE \"\${_stage}/\${_u}\" \"\${_t}\")
  endforeach()
  file(INSTALL DESTINATION \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES \"\${_stage}/kmsd.service\" \"\${_stage}/kms-mailbox.service\")
")

# ------------------------------------------------------------- man pages
# binary:section. kmsd and kms-mailbox are daemons in sbin (8), the others
# commands in bin (1). Each binary is also the CMake target's name.
set(KMS_MAN_PAGES kmsd:8 kms-mailbox:8 kmsctl:1 kms-client:1 kms-loadgen:1 kms-ibake:1)
option(KMS_BUILD_MAN "Build the man pages with help2man (if found)" ON)
find_program(HELP2MAN_EXECUTABLE help2man)
find_program(GZIP_EXECUTABLE gzip)
if(KMS_BUILD_MAN AND HELP2MAN_EXECUTABLE AND GZIP_EXECUTABLE AND NOT CMAKE_CROSSCOMPILING)
  set(_mandir ${CMAKE_BINARY_DIR}/man)
  set(_outs)
  # An executable copy (help2man runs it by path), refreshed on reconfigure.
  file(COPY ${KMS_PKG_SRC}/man/h2m-help.sh DESTINATION ${_mandir}
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
       GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${KMS_PKG_SRC}/man/h2m-help.sh)
  foreach(_entry IN LISTS KMS_MAN_PAGES)
    string(REPLACE ":" ";" _entry "${_entry}")
    list(GET _entry 0 _bin)
    list(GET _entry 1 _sec)
    set(_page ${_mandir}/${_bin}.${_sec})
    # help2man runs man/bin/<binary>, a link to man/h2m-help.sh,
    # which prints the real binary's --help with its synopsis in the
    # shape help2man reads (see that script). The version is given: the
    # binaries' --version adds library lines help2man has no place for.
    add_custom_command(OUTPUT ${_page}.gz
      COMMAND ${CMAKE_COMMAND} -E make_directory ${_mandir}/bin
      COMMAND ${CMAKE_COMMAND} -E create_symlink ../h2m-help.sh ${_mandir}/bin/${_bin}
      COMMAND ${CMAKE_COMMAND} -E env KMS_H2M_BIN=$<TARGET_FILE:${_bin}>
              ASAN_OPTIONS=detect_leaks=0
              ${HELP2MAN_EXECUTABLE} --no-info --section=${_sec}
              --version-string=${PROJECT_VERSION}
              --source=ims-kms "--manual=IMS KMS"
              --include=${KMS_PKG_SRC}/man/${_bin}.h2m
              --output=${_page} ${_mandir}/bin/${_bin}
      COMMAND ${GZIP_EXECUTABLE} -9nf -k ${_page}
      DEPENDS ${_bin} ${KMS_PKG_SRC}/man/${_bin}.h2m ${_mandir}/h2m-help.sh
      COMMENT "help2man: ${_bin}(${_sec})"
      VERBATIM)
    list(APPEND _outs ${_page}.gz)
    install(FILES ${_page}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${_sec})
  endforeach()
  add_custom_target(man ALL DEPENDS ${_outs})
  message(STATUS "help2man: man pages built with ALL (target man)")
else()
  message(STATUS "help2man not found (or KMS_BUILD_MAN=OFF): no man pages")
endif()

# ------------------------------------------------------------------ CPack
set(KMS_DEB_MAINTAINER "IMS KMS maintainers <ims-kms@localhost>"
    CACHE STRING "Maintainer field of the .deb")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ims-kms)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${KMS_DEB_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "IMS media security key management server for deferred delivery")
set(CPACK_PACKAGE_DESCRIPTION
"Key management server for deferred delivery in IMS media security (3GPP
TR 33.828): kmsd (DEPOSIT and RETRIEVE over UDP, kernel sockets or DPDK;
keys in a PKCS#11 HSM, wrapped keys in LMDB), kmsctl (operator tool),
kms-client, kms-loadgen, and the MIKEY-IBAKE mailbox kms-mailbox with its
client kms-ibake. The systemd units kmsd.service and kms-mailbox.service
run as the system user kms and are not enabled by the package.")
# The .deb always installs under /usr (configuration in /etc/kms),
# whatever CMAKE_INSTALL_PREFIX is. DESTDIR mode so that the install code
# above sees the real prefix (/usr), not CPack's staging directory.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Added to what dpkg-shlibdeps finds: adduser for the postinst. The PKCS#11
# module and the DPDK PMDs are dlopen()ed: suggested, not depended on.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "softhsm2, dpdk, gnuplot-nox")
file(WRITE ${KMS_PKG_BIN}/deb/conffiles "/etc/kms/kms.conf\n/etc/kms/kms-mailbox.conf\n")
foreach(_s postinst prerm postrm)
  configure_file(${KMS_PKG_SRC}/deb/${_s} ${KMS_PKG_BIN}/deb/${_s} COPYONLY)
endforeach()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${KMS_PKG_BIN}/deb/conffiles ${KMS_PKG_BIN}/deb/postinst
    ${KMS_PKG_BIN}/deb/prerm ${KMS_PKG_BIN}/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/")
include(CPack)
