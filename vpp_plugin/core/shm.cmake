# shm.cmake — the shared-memory protocol's tests and tools (included by CMakeLists.txt after it
# defines lb_rl_core, which already compiles lb_rl_shm.c from its *.c glob).
#
#   tests/test_shm_*.c   CTest programs (exit 0 iff every check held)
#   tools/               lb_rl_shm_layout (offsets/sizes as JSON, for the Python pin test),
#                        lb_rl_shm_conform (cross-process conformance writer/reader)
#   fuzz/                libFuzzer harnesses; built here only with clang (LB_RL_FUZZ=ON), see SHM.md

lb_rl_add_c_tests("tests/test_shm_*.c")

foreach(_tool lb_rl_shm_layout lb_rl_shm_conform)
  add_executable(${_tool} ${CMAKE_CURRENT_SOURCE_DIR}/tools/${_tool}.c)
  target_compile_options(${_tool} PRIVATE ${LB_RL_WARNINGS})
  target_link_libraries(${_tool} PRIVATE lb_rl_core)
endforeach()

# C writer process -> C reader process, both directions, 3*10^6 frames each (~1-2 s each).
add_test(NAME shm_conform_c_c
         COMMAND lb_rl_shm_conform selftest ${CMAKE_CURRENT_BINARY_DIR}/shm_conform_region 3000000)
set_tests_properties(shm_conform_c_c PROPERTIES TIMEOUT 120)
# the same at 1024 servers (16 bitmap words, 8 KiB msg_in frames, 230 KB msg_out frames),
# 2*10^4 frames each way (~4 s; the 10^6-frame run is tests/shm -m slow)
add_test(NAME shm_conform_c_c_s1024
         COMMAND lb_rl_shm_conform selftest ${CMAKE_CURRENT_BINARY_DIR}/shm_conform_region_s1024
                 20000 1024)
set_tests_properties(shm_conform_c_c_s1024 PROPERTIES TIMEOUT 120)
add_test(NAME shm_layout_json COMMAND lb_rl_shm_layout 7 9 3 5)

option(LB_RL_FUZZ "build the libFuzzer harnesses in fuzz/ (needs clang)" OFF)
if(LB_RL_FUZZ)
  file(GLOB _lb_rl_fuzz_core ${CMAKE_CURRENT_SOURCE_DIR}/*.c)
  foreach(_fz fuzz_shm_attach fuzz_shm_weights)
    add_executable(${_fz} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/${_fz}.c ${_lb_rl_fuzz_core})
    target_include_directories(${_fz} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
    target_compile_options(${_fz} PRIVATE -g -O1 -fsanitize=fuzzer,address,undefined ${LB_RL_WARNINGS})
    target_link_options(${_fz} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${_fz} PRIVATE m)
  endforeach()
endif()
