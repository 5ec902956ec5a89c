// libFuzzer: a scores HDF5 file through table_read_h5. After each input every
// HDF5 object is closed (H5close), so a failed read leaks no handle or fd.
#include <hdf5.h>

#include "../../scoring/table.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    const char* path = fuzz_file("scores.h5", data, n);
    static ScoreTable t;
    int rc = FUZZ_RUN(1, (void)0, table_read_h5(&t, path); table_free(&t));
    if (rc) H5close();
    return 0;
}
