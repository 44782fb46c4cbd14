DROP TABLE analysis_result;
