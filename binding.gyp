{
  "targets": [
    {
      "target_name": "block_crc",
      "sources": ["native/block-crc.c"],
      "cflags": ["-O3"],
      "conditions": [["target_arch=='x64'", { "cflags": ["-msse4.2"] }]]
    }
  ]
}
